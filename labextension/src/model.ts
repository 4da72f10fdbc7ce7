/**
 * The panel's state and the actions on it. It calls only `api.ts`, keeps the
 * secret of a newly created token in memory until the user dismisses it (it
 * is never written anywhere), and signals every change to the view.
 */
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import * as api from './api';
import { errorMessage, LimsRequestError } from './request';
import {
  INewProxyToken,
  IStagingJob,
  IStatus,
  ITokenList,
  ITokenRequest,
  LABEXTENSION_VERSION,
  ProxyMode
} from './tokens';

/** What the panel knows of the server extension. */
export type ServerState = 'checking' | 'ok' | 'missing' | 'mismatch' | 'unreachable' | 'error';

/** A part of the panel that loads on its own and may fail on its own. */
export interface IPart<T> {
  value: T | null;
  /** Why the last load failed (null when it did not). */
  error: string | null;
  /** The part's route is absent on this server (404). */
  unavailable: boolean;
}

function emptyPart<T>(): IPart<T> {
  return { value: null, error: null, unavailable: false };
}

export class LimsModel implements IDisposable {
  constructor(settings: ServerConnection.ISettings) {
    this.settings = settings;
  }

  readonly settings: ServerConnection.ISettings;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get serverState(): ServerState {
    return this._serverState;
  }

  /** A sentence about the server extension when it is not as expected. */
  get serverMessage(): string | null {
    return this._serverMessage;
  }

  get status(): IStatus | null {
    return this._status;
  }

  get tokens(): IPart<ITokenList> {
    return this._tokens;
  }

  get staging(): IPart<IStagingJob[]> {
    return this._staging;
  }

  /** The token created last, with its secret, until `dismissNewToken`. */
  get newToken(): INewProxyToken | null {
    return this._newToken;
  }

  /** The proxy mode: from the token list when loaded (fresher), else from the status. */
  get proxyMode(): ProxyMode | null {
    return this._tokens.value?.mode ?? this._status?.proxy.mode ?? null;
  }

  get allowedPorts(): number[] {
    return this._tokens.value?.allowedPorts ?? this._status?.proxy.allowedPorts ?? [];
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Check the server extension, then load every part of the panel. */
  async refresh(): Promise<void> {
    if (this._refreshing) {
      return this._refreshing;
    }
    this._refreshing = this._refresh().finally(() => {
      this._refreshing = null;
    });
    return this._refreshing;
  }

  /** Set the proxy mode; resolves to an error message, or null on success. */
  async setProxyMode(mode: ProxyMode): Promise<string | null> {
    return this._act(async () => {
      const reply = await api.setProxyMode(this.settings, mode);
      if (this._tokens.value) {
        this._tokens = { ...this._tokens, value: { ...this._tokens.value, mode: reply.mode } };
      }
      if (this._status) {
        this._status = { ...this._status, proxy: { ...this._status.proxy, mode: reply.mode } };
      }
    });
  }

  /** Create a token; it is kept (with its secret) as `newToken`. */
  async createToken(request: ITokenRequest): Promise<string | null> {
    return this._act(async () => {
      this._newToken = await api.createToken(this.settings, request);
      this._emit(); // the secret shows at once, before the list reloads
      await this._loadTokens();
    });
  }

  dismissNewToken(): void {
    this._newToken = null;
    this._emit();
  }

  async revokeToken(id: string): Promise<string | null> {
    return this._act(async () => {
      await api.revokeToken(this.settings, id);
      if (this._newToken?.id === id) {
        this._newToken = null;
      }
      await this._loadTokens();
    });
  }

  async retryStagingJob(id: string): Promise<string | null> {
    return this._act(async () => {
      await api.retryStagingJob(this.settings, id);
      await this._loadStaging();
    });
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    await this._checkServer();
    if (this._serverState === 'ok' || this._serverState === 'mismatch') {
      await Promise.all([this._loadTokens(), this._loadStaging()]);
    }
    this._emit();
  }

  private async _checkServer(): Promise<void> {
    try {
      this._status = await api.getStatus(this.settings);
      if (this._status.version !== LABEXTENSION_VERSION) {
        this._serverState = 'mismatch';
        this._serverMessage =
          `The server extension jupyter-lims-bridge is version ${this._status.version}, ` +
          `this panel is version ${LABEXTENSION_VERSION}. Install the same version of the ` +
          'Python package in the server environment and restart the server; until then ' +
          'some actions may fail.';
      } else {
        this._serverState = 'ok';
        this._serverMessage = null;
      }
    } catch (error) {
      this._status = null;
      if (error instanceof LimsRequestError && error.status === 404) {
        this._serverState = 'missing';
        this._serverMessage =
          'The server extension jupyter-lims-bridge is not running on this Jupyter server ' +
          '(lims/api/status answered 404). Install the Python package jupyter-lims-bridge ' +
          'in the server environment, check `jupyter server extension list`, and restart the server.';
      } else if (error instanceof ServerConnection.NetworkError) {
        this._serverState = 'unreachable';
        this._serverMessage = 'The Jupyter server cannot be reached.';
      } else {
        this._serverState = 'error';
        this._serverMessage = `The LIMS bridge did not answer: ${errorMessage(error)}`;
      }
    }
  }

  private async _loadTokens(): Promise<void> {
    try {
      this._tokens = {
        value: await api.listTokens(this.settings),
        error: null,
        unavailable: false
      };
    } catch (error) {
      this._tokens = Private.failed(this._tokens, error);
    }
  }

  private async _loadStaging(): Promise<void> {
    try {
      const reply = await api.listStaging(this.settings);
      this._staging = { value: reply.jobs, error: null, unavailable: false };
    } catch (error) {
      this._staging = Private.failed(this._staging, error);
    }
  }

  /** Run a user action: null when it succeeded (the view is told), else the message to show. */
  private async _act(action: () => Promise<void>): Promise<string | null> {
    try {
      await action();
    } catch (error) {
      return errorMessage(error);
    }
    this._emit();
    return null;
  }

  private _emit(): void {
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _serverState: ServerState = 'checking';
  private _serverMessage: string | null = null;
  private _status: IStatus | null = null;
  private _tokens: IPart<ITokenList> = emptyPart();
  private _staging: IPart<IStagingJob[]> = emptyPart();
  private _newToken: INewProxyToken | null = null;
  private _refreshing: Promise<void> | null = null;
  private _isDisposed = false;
}

namespace Private {
  export function failed<T>(previous: IPart<T>, error: unknown): IPart<T> {
    const unavailable = error instanceof LimsRequestError && error.status === 404;
    return {
      value: unavailable ? null : previous.value,
      error: unavailable ? null : errorMessage(error),
      unavailable
    };
  }
}
