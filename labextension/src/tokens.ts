/**
 * The panel's one copy of the server's URL namespace and response shapes.
 *
 * URLs are relative to the server's base URL, exactly as the server's route
 * table declares them (`jupyter_lims_bridge/urls.py`, `TEMPLATES`);
 * `tests/test_routes_agree.py` checks that the two agree. `{name}` marks a
 * path parameter. Nothing else in the extension spells a server URL.
 */

/** The version of this labextension; the server extension must report the same. */
export const LABEXTENSION_VERSION = '0.1.0';

/** The id prefix of every plugin, command and widget of this extension. */
export const PLUGIN_NAMESPACE = 'jupyter-lims-bridge';

/** The first path segment of every server URL of the bridge. */
export const NAMESPACE = 'lims';

/** Route name (camelCase of the server's PATTERNS key) -> URL template. */
export const URLS = {
  openPage: 'lims/open',
  openApi: 'lims/api/open',
  status: 'lims/api/status',
  staging: 'lims/api/staging',
  stagingJob: 'lims/api/staging/{job_id}',
  tokens: 'lims/api/tokens',
  token: 'lims/api/tokens/{token_id}',
  proxyMode: 'lims/api/proxy',
  save: 'lims/api/save',
  proxyAbsolute: 'lims/proxy/absolute/{port}/',
  proxy: 'lims/proxy/{port}/'
} as const;

/** The header an external client sends its proxy token in. */
export const PROXY_TOKEN_HEADER = 'X-Proxy-Token';

/** Notebook metadata key under which the server writes an open's provenance. */
export const NOTEBOOK_METADATA_KEY = 'lims';

/** Who may use the port proxy. */
export type ProxyMode = 'token' | 'open' | 'disabled';

export const PROXY_MODES: ReadonlyArray<ProxyMode> = ['token', 'open', 'disabled'];

/** An ELN / LIMS entity, as signed by the LIMS. */
export interface IEntity {
  type: string;
  id: string;
  title?: string | null;
  url?: string | null;
}

/** One line of `recent` in `GET lims/api/status`. */
export interface IRecentEntry {
  entity: IEntity;
  /** The notebook's path relative to the server root. */
  path: string;
  /** ISO 8601 UTC. */
  openedAt: string;
  /** The last successful Save to ELN of this notebook (absent on older servers). */
  lastSave?: ISaveRecord | null;
}

/** A file sent to the ELN. */
export interface ISavedFile {
  name: string;
  sha256: string;
  size: number;
}

/** What the ELN answered an upload: its HTTP status, and the version and URL it gave. */
export interface IElnAnswer {
  status?: number;
  version?: string | number | null;
  url?: string | null;
}

/** One save of a notebook to the ELN. */
export interface ISaveRecord {
  savedAt: string;
  files: ISavedFile[];
  eln: IElnAnswer;
}

/** `POST lims/api/save` answer. */
export interface ISaveReply extends ISaveRecord {
  /** `unchanged`: the content equals the last save; nothing was uploaded. */
  status: 'saved' | 'unchanged';
}

/** `GET lims/api/save?path=`: whether a notebook can be saved to the ELN, and its saves. */
export interface ISaveInfo {
  path: string;
  /** The server keeps a return (from the open token) for this notebook. */
  hasReturn: boolean;
  expiresAt: string | null;
  expired: boolean;
  /** Newest first. */
  saves: ISaveRecord[];
}

/** The formats Save to ELN sends (the notebook always). */
export type SaveFormat = 'ipynb' | 'html';

/** `GET lims/api/status`. */
export interface IStatus {
  version: string;
  owner: string;
  proxy: { mode: ProxyMode; allowedPorts: number[]; allowedServices?: string[] };
  mounts: string[];
  recent: IRecentEntry[];
  /** Origins allowed to embed this server (`embed_origins`); absent from older servers. */
  embed?: { origins: string[] };
}

/** A proxy token as listed (never with its secret). */
export interface IProxyToken {
  id: string;
  name: string;
  /** Ports the token may reach; null or empty: every allowed port. */
  ports: number[] | null;
  /** Named services the token may reach (absent: see `ports`). */
  services?: string[];
  createdAt: string | null;
  expiresAt: string | null;
  lastUsedAt: string | null;
}

/** `GET lims/api/tokens`. */
export interface ITokenList {
  mode: ProxyMode;
  allowedPorts: number[];
  allowedServices?: string[];
  tokens: IProxyToken[];
}

/** `POST lims/api/tokens` body. */
export interface ITokenRequest {
  name: string;
  ports?: number[];
  /** Named services (`allowed_services`) the token is scoped to. */
  services?: string[];
  /** Seconds until the token expires; omitted: never. */
  expiresIn?: number;
}

/** `POST lims/api/tokens` answer: the only time `token` is ever returned. */
export interface INewProxyToken {
  id: string;
  name: string;
  token: string;
  ports: number[] | null;
  createdAt: string | null;
  expiresAt: string | null;
}

/** `PUT lims/api/proxy` answer. */
export interface IProxyModeReply {
  mode: ProxyMode;
}

export type StagingState = 'queued' | 'running' | 'done' | 'failed';

/** One data staging job. */
export interface IStagingJob {
  id: string;
  name: string;
  path: string;
  state: StagingState;
  bytesDone: number;
  bytesTotal: number | null;
  /** Bytes per second while running. */
  speed?: number;
  /** The stable code of a failure (`checksum_mismatch`, `download_failed`…). */
  reason: string | null;
  /** A failure's explanation, safe to show. */
  message?: string | null;
}

/** `GET lims/api/staging`. */
export interface IStagingList {
  jobs: IStagingJob[];
}

/** Every error of the bridge's API. */
export interface IErrorReply {
  message: string;
  reason: string;
}

/** Provenance the server writes under notebook metadata `lims`. */
export interface INotebookProvenance {
  entity?: IEntity;
  openedAt?: string;
  issuer?: string | null;
}
