/**
 * One typed function per route of the bridge's API (DESIGN.md, "HTTP
 * interface"). URLs come from `tokens.ts` only.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI } from './request';
import {
  INewProxyToken,
  IProxyModeReply,
  ISaveInfo,
  ISaveReply,
  IStagingJob,
  IStagingList,
  IStatus,
  ITokenList,
  ITokenRequest,
  PROXY_TOKEN_HEADER,
  ProxyMode,
  SaveFormat,
  URLS
} from './tokens';

/** Fill the `{name}` parameters of a URL template, each escaped. */
export function fillUrl(template: string, params: Record<string, string | number> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    if (!(name in params)) {
      throw new Error(`missing URL parameter ${name}`);
    }
    return encodeURIComponent(String(params[name]));
  });
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };

/** `GET lims/api/status`. */
export function getStatus(settings: ServerConnection.ISettings): Promise<IStatus> {
  return requestAPI<IStatus>(settings, URLS.status);
}

/** `GET lims/api/tokens`. */
export function listTokens(settings: ServerConnection.ISettings): Promise<ITokenList> {
  return requestAPI<ITokenList>(settings, URLS.tokens);
}

/** `POST lims/api/tokens`: the answer is the only time the token's secret is seen. */
export function createToken(
  settings: ServerConnection.ISettings,
  request: ITokenRequest
): Promise<INewProxyToken> {
  return requestAPI<INewProxyToken>(settings, URLS.tokens, {
    method: 'POST',
    headers: JSON_HEADERS,
    body: JSON.stringify(request)
  });
}

/** `DELETE lims/api/tokens/<id>`. */
export async function revokeToken(settings: ServerConnection.ISettings, id: string): Promise<void> {
  await requestAPI<null>(settings, fillUrl(URLS.token, { token_id: id }), { method: 'DELETE' });
}

/** `PUT lims/api/proxy`. */
export function setProxyMode(
  settings: ServerConnection.ISettings,
  mode: ProxyMode
): Promise<IProxyModeReply> {
  return requestAPI<IProxyModeReply>(settings, URLS.proxyMode, {
    method: 'PUT',
    headers: JSON_HEADERS,
    body: JSON.stringify({ mode })
  });
}

/** `GET lims/api/staging`. */
export function listStaging(settings: ServerConnection.ISettings): Promise<IStagingList> {
  return requestAPI<IStagingList>(settings, URLS.staging);
}

/** `GET lims/api/staging/<id>`. */
export function getStagingJob(
  settings: ServerConnection.ISettings,
  id: string
): Promise<IStagingJob> {
  return requestAPI<IStagingJob>(settings, fillUrl(URLS.stagingJob, { job_id: id }));
}

/** `POST lims/api/staging/<id>`: retry a failed download. */
export function retryStagingJob(
  settings: ServerConnection.ISettings,
  id: string
): Promise<IStagingJob | null> {
  return requestAPI<IStagingJob | null>(settings, fillUrl(URLS.stagingJob, { job_id: id }), {
    method: 'POST'
  });
}

/** `GET lims/api/save?path=`: can this notebook be saved to the ELN, and its saves. */
export function getSaves(settings: ServerConnection.ISettings, path: string): Promise<ISaveInfo> {
  return requestAPI<ISaveInfo>(settings, `${URLS.save}?path=${encodeURIComponent(path)}`);
}

/** `POST lims/api/save`: upload the saved notebook (and its HTML export) to its ELN entry. */
export function saveToEln(
  settings: ServerConnection.ISettings,
  path: string,
  formats: SaveFormat[] = ['ipynb', 'html']
): Promise<ISaveReply> {
  return requestAPI<ISaveReply>(settings, URLS.save, {
    method: 'POST',
    headers: JSON_HEADERS,
    body: JSON.stringify({ path, formats })
  });
}

/** The URL an external client uses to reach local `port` through the proxy. */
export function proxyUrl(settings: ServerConnection.ISettings, port: number): string {
  const base = new URL(settings.baseUrl, window.location.href).href;
  return URLExt.join(base, fillUrl(URLS.proxy, { port }));
}

/** A ready-to-paste curl line for `port`; without a token, for proxy mode `open`. */
export function curlLine(
  settings: ServerConnection.ISettings,
  port: number,
  token?: string
): string {
  const url = proxyUrl(settings, port);
  return token === undefined
    ? `curl '${url}'`
    : `curl -H "${PROXY_TOKEN_HEADER}: ${token}" '${url}'`;
}
