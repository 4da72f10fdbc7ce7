/**
 * The notebook toolbar's "Save to ELN" button, beside the "ELN: <title> ↗" link.
 *
 * Shown only for notebooks opened from the ELN (metadata `lims`) for which the
 * server keeps a return (it asks `GET lims/api/save?path=`; the grant itself
 * never reaches the browser). A
 * click saves unsaved changes first (`context.save()`), then asks the server to
 * upload (`POST lims/api/save`), showing progress and the result in a
 * JupyterLab notification and in a short status line next to the button.
 */
import { Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import * as api from '../api';
import { postToParent } from '../embed';
import { errorMessage, LimsRequestError } from '../request';
import { ISaveReply, NOTEBOOK_METADATA_KEY } from '../tokens';

/** "Saved to ELN (version 3)", or what happened instead. */
export function saveResultText(reply: ISaveReply): string {
  const version = reply.eln?.version;
  const suffix = version !== null && version !== undefined ? ` (version ${version})` : '';
  return reply.status === 'unchanged'
    ? `Unchanged since the last save to ELN${suffix}`
    : `Saved to ELN${suffix}`;
}

export class SaveToElnButton extends Widget {
  constructor(
    context: DocumentRegistry.IContext<INotebookModel>,
    settings: ServerConnection.ISettings,
    onSaved: () => void
  ) {
    super({ node: document.createElement('div') });
    this.addClass('jp-LimsBridge-SaveToEln');
    this._context = context;
    this._settings = settings;
    this._onSaved = onSaved;
    this._button = document.createElement('button');
    this._button.type = 'button';
    this._button.className = 'jp-LimsBridge-SaveToElnButton jp-mod-styled';
    this._button.textContent = 'Save to ELN';
    this._button.addEventListener('click', () => void this.save());
    this._status = document.createElement('span');
    this._status.className = 'jp-LimsBridge-SaveStatus';
    this._status.setAttribute('role', 'status');
    this.node.append(this._button, this._status);
    this.hide();
    context.pathChanged.connect(this._check, this);
    void context.ready.then(() => this._check());
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._context.pathChanged.disconnect(this._check, this);
    super.dispose();
  }

  /** Save unsaved changes, then upload to the ELN; resolves when done (never rejects). */
  async save(): Promise<void> {
    if (this._busy) {
      return;
    }
    this._busy = true;
    this._button.disabled = true;
    this._setStatus('Saving to ELN…', 'busy');
    const id = Notification.emit('Saving to ELN…', 'in-progress', { autoClose: false });
    try {
      if (this._context.model.dirty) {
        await this._context.save();
      }
      const reply = await api.saveToEln(this._settings, this._context.path);
      const text = saveResultText(reply);
      this._setStatus(text, 'ok');
      Notification.update({ id, message: text, type: 'success', autoClose: 5000 });
      // an ELN page showing JupyterLab in a frame learns of it (an allowed origin only)
      postToParent('lims-bridge:saved', {
        path: this._context.path,
        status: reply.status,
        version: reply.eln?.version ?? null,
        url: reply.eln?.url ?? null
      });
      this._onSaved();
    } catch (error) {
      const text = `Save to ELN failed: ${errorMessage(error)}`;
      this._setStatus(text, 'error');
      Notification.update({ id, message: text, type: 'error', autoClose: false });
      postToParent('lims-bridge:error', {
        path: this._context.path,
        reason: error instanceof LimsRequestError ? error.reason : null,
        message: errorMessage(error)
      });
    } finally {
      this._busy = false;
      this._button.disabled = false;
    }
  }

  private async _check(): Promise<void> {
    // only notebooks opened from the ELN (provenance under metadata `lims`) ask the
    // server; others never could have a return
    if (!this._context.model.getMetadata(NOTEBOOK_METADATA_KEY)) {
      this.hide();
      return;
    }
    try {
      const info = await api.getSaves(this._settings, this._context.path);
      if (this.isDisposed) {
        return;
      }
      if (!info.hasReturn) {
        this.hide();
        return;
      }
      const last = info.saves[0];
      const version = last?.eln?.version;
      // the last save in the tooltip: the toolbar has little room (the panel shows it too)
      this._button.title = info.expired
        ? 'The ELN’s permission to receive results for this entry has expired'
        : 'Save this notebook and an HTML copy to its ELN entry' +
          (last
            ? ` (last saved ${new Date(last.savedAt).toLocaleString()}` +
              (version !== null && version !== undefined ? `, version ${version})` : ')')
            : '');
      this.show();
    } catch {
      // an older server without the route, or a notebook outside the workspace
      if (!this.isDisposed) {
        this.hide();
      }
    }
  }

  private _setStatus(text: string, kind: 'busy' | 'ok' | 'error'): void {
    this._status.textContent = text;
    this._status.title = text;
    this._status.dataset.kind = kind;
  }

  private _context: DocumentRegistry.IContext<INotebookModel>;
  private _settings: ServerConnection.ISettings;
  private _onSaved: () => void;
  private _button: HTMLButtonElement;
  private _status: HTMLSpanElement;
  private _busy = false;
}

/** Adds a `SaveToElnButton` to every notebook's toolbar, right after the ELN link. */
export class SaveToElnExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(settings: ServerConnection.ISettings, onSaved: () => void) {
    this._settings = settings;
    this._onSaved = onSaved;
  }

  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const button = new SaveToElnButton(context, this._settings, this._onSaved);
    if (!panel.toolbar.insertAfter('limsElnLink', 'limsSaveToEln', button)) {
      panel.toolbar.insertItem(11, 'limsSaveToEln', button);
    }
    return button;
  }

  private _settings: ServerConnection.ISettings;
  private _onSaved: () => void;
}
