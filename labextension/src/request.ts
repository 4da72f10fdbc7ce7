/**
 * The one place the panel talks HTTP: `requestAPI` over JupyterLab's server
 * settings (base URL, XSRF cookie and auth token are handled by
 * `ServerConnection.makeRequest`). Widgets do not call it; they call `api.ts`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * A refusal from the server, with the bridge's stable `reason` code next to
 * the human `message` (already safe for display).
 */
export class LimsRequestError extends ServerConnection.ResponseError {
  constructor(response: Response, message: string, reason: string | null) {
    super(response, message);
    this.reason = reason;
  }

  /** The stable code of DESIGN.md (`token_invalid`, `proxy_disabled`…), if the server sent one. */
  readonly reason: string | null;

  get status(): number {
    return this.response.status;
  }
}

/**
 * Call the bridge's API at `endPoint` (relative to the server base URL).
 *
 * Resolves with the parsed JSON body (or `null` for an empty body); rejects with
 * a `LimsRequestError` carrying the server's `message`, or with
 * `ServerConnection.NetworkError` when the server cannot be reached.
 */
export async function requestAPI<T>(
  settings: ServerConnection.ISettings,
  endPoint: string,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    // the server's error shape is {"message", "reason"}; anything else says only its status
    const body = (data ?? {}) as { message?: unknown; reason?: unknown };
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : `${response.status} ${response.statusText || 'error'}`;
    const reason = typeof body.reason === 'string' ? body.reason : null;
    throw new LimsRequestError(response, message, reason);
  }
  return data as T;
}

/** A message for any error thrown by `requestAPI`, fit to show the user. */
export function errorMessage(error: unknown): string {
  if (error instanceof ServerConnection.ResponseError) {
    return error.message;
  }
  if (error instanceof ServerConnection.NetworkError) {
    return 'The Jupyter server cannot be reached.';
  }
  return error instanceof Error ? error.message : String(error);
}
