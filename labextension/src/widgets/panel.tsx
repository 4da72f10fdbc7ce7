/**
 * The "LIMS" sidebar: a JupyterLab SidePanel holding one collapsible section
 * per capability (Proxy, Tokens, Recent ELN entries, Data) in a single
 * scrolling column (an accordion's fixed split left each part too little
 * room at a sidebar's size). The sections render the model and call its
 * actions; they never call the server.
 */
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { Time } from '@jupyterlab/coreutils';
import {
  addIcon,
  Button,
  checkIcon,
  copyIcon,
  deleteIcon,
  HTMLSelect,
  launchIcon,
  notebookIcon,
  ReactWidget,
  refreshIcon,
  SidePanel,
  ToolbarButtonComponent,
  UseSignal,
  LabIcon,
  caretDownIcon,
  caretRightIcon
} from '@jupyterlab/ui-components';
import { Panel } from '@lumino/widgets';
import * as React from 'react';

import { curlLine, proxyUrl } from '../api';
import { LimsModel } from '../model';
import { IRecentEntry, IStagingJob, ProxyMode, PROXY_MODES } from '../tokens';
import { limsIcon } from '../icon';

/** User settings the panel reads (schema/plugin.json). */
export interface IPanelSettings {
  /** Seconds between two refreshes while the panel is visible. */
  refreshInterval: number;
  /** Preselected expiry of a new token in seconds; 0 = never. */
  defaultTokenExpiry: number;
}

export const DEFAULT_SETTINGS: IPanelSettings = { refreshInterval: 5, defaultTokenExpiry: 86400 };

export interface IPanelOptions {
  model: LimsModel;
  /** Open a notebook by its server path. */
  openPath: (path: string) => void;
  settings: () => IPanelSettings;
}

/** The sidebar panel: server banner in the header, sections in the accordion. */
export class LimsPanel extends SidePanel {
  constructor(options: IPanelOptions) {
    super({ content: new Panel() });
    this.id = 'jp-lims-bridge-panel';
    this.addClass('jp-LimsBridge-Panel');
    this.title.icon = limsIcon;
    this.title.caption = 'LIMS: proxy tokens, recent ELN entries, data';
    this._model = options.model;
    this._settings = options.settings;

    const model = options.model;
    const render = (view: (m: LimsModel) => JSX.Element) => (
      <UseSignal signal={model.changed}>{() => view(model)}</UseSignal>
    );
    const header = ReactWidget.create(
      <>
        <div className="jp-LimsBridge-TitleRow">
          <h2 className="jp-LimsBridge-Title">LIMS</h2>
          <ToolbarButtonComponent
            icon={refreshIcon}
            tooltip="Refresh the LIMS panel"
            aria-label="Refresh the LIMS panel"
            onClick={() => void model.refresh()}
          />
        </div>
        {render(m => (
          <ServerBanner model={m} />
        ))}
      </>
    );
    header.addClass('jp-LimsBridge-Header');
    this.header.addWidget(header);

    this.content.addClass('jp-LimsBridge-Content');
    const sections = ReactWidget.create(
      <>
        <Section name="Proxy" label="Proxy">
          {render(m => (
            <ProxySection model={m} />
          ))}
        </Section>
        <Section name="Tokens" label="Tokens">
          {render(m => (
            <TokensSection model={m} settings={this._settings} />
          ))}
        </Section>
        <Section name="Recent" label="Recent ELN entries">
          {render(m => (
            <RecentSection model={m} openPath={options.openPath} />
          ))}
        </Section>
        <Section name="Data" label="Data">
          {render(m => (
            <DataSection model={m} />
          ))}
        </Section>
      </>
    );
    sections.addClass('jp-LimsBridge-Sections');
    this.content.addWidget(sections);
  }

  protected onAfterShow(): void {
    void this._model.refresh();
    this._startTimer();
  }

  protected onAfterHide(): void {
    this._stopTimer();
  }

  dispose(): void {
    this._stopTimer();
    super.dispose();
  }

  /** Restart the refresh timer, e.g. after the settings changed. */
  restartTimer(): void {
    if (this.isVisible) {
      this._startTimer();
    }
  }

  private _startTimer(): void {
    this._stopTimer();
    const seconds = Math.max(1, this._settings().refreshInterval);
    this._timer = window.setInterval(() => {
      if (this.isVisible && document.visibilityState === 'visible') {
        void this._model.refresh();
      }
    }, seconds * 1000);
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _model: LimsModel;
  private _settings: () => IPanelSettings;
  private _timer: number | null = null;
}

// ---------------------------------------------------------------------------
// small parts

/** A collapsible section with a header in the style of JupyterLab's accordion titles. */
function Section(props: { name: string; label: string; children: React.ReactNode }): JSX.Element {
  const [expanded, setExpanded] = React.useState(true);
  const bodyId = `jp-LimsBridge-Section-${props.name}-body`;
  return (
    <section
      className={`jp-LimsBridge-Section jp-LimsBridge-Section-${props.name}`}
      aria-label={props.label}
    >
      <h3 className="jp-LimsBridge-SectionTitle">
        <button aria-expanded={expanded} aria-controls={bodyId} onClick={() => setExpanded(!expanded)}>
          <Icon icon={expanded ? caretDownIcon : caretRightIcon} />
          <span>{props.label}</span>
        </button>
      </h3>
      <div id={bodyId} className="jp-LimsBridge-SectionBody" hidden={!expanded}>
        {props.children}
      </div>
    </section>
  );
}

function Icon(props: { icon: LabIcon }): JSX.Element {
  return <props.icon.react tag="span" className="jp-LimsBridge-Icon" elementPosition="center" />;
}

/** A button that copies `text`, saying "Copied" for a moment. */
function CopyButton(props: { text: string; what: string }): JSX.Element {
  const [copied, setCopied] = React.useState(false);
  React.useEffect(() => {
    if (!copied) {
      return;
    }
    const timer = window.setTimeout(() => setCopied(false), 1500);
    return () => window.clearTimeout(timer);
  }, [copied]);
  return (
    <Button
      small
      minimal
      className="jp-LimsBridge-CopyButton"
      title={copied ? 'Copied' : `Copy ${props.what}`}
      aria-label={`Copy ${props.what}`}
      onClick={() => {
        Clipboard.copyToSystem(props.text);
        setCopied(true);
      }}
    >
      <Icon icon={copied ? checkIcon : copyIcon} />
      <span className="jp-LimsBridge-VisuallyHidden" aria-live="polite">
        {copied ? 'Copied' : ''}
      </span>
    </Button>
  );
}

/** Read-only text to copy: wraps at any character, selectable as a whole. */
function CopyField(props: { text: string; what: string; className?: string }): JSX.Element {
  return (
    <div className={`jp-LimsBridge-CopyField ${props.className ?? ''}`}>
      <code className="jp-LimsBridge-Code" aria-label={props.what}>
        {props.text}
      </code>
      <CopyButton text={props.text} what={props.what} />
    </div>
  );
}

function ErrorLine(props: { message: string | null }): JSX.Element | null {
  return props.message ? (
    <p className="jp-LimsBridge-Error" role="alert">
      {props.message}
    </p>
  ) : null;
}

function Empty(props: { children: React.ReactNode }): JSX.Element {
  return <p className="jp-LimsBridge-Empty">{props.children}</p>;
}

const TIME_UNITS: Array<[Intl.RelativeTimeFormatUnit, number]> = [
  ['year', 365 * 86400_000],
  ['month', 30 * 86400_000],
  ['day', 86400_000],
  ['hour', 3600_000],
  ['minute', 60_000],
  ['second', 1000]
];

/**
 * "5 minutes ago", "tomorrow", "in 7 days". (JupyterLab's Time.formatHuman
 * rounds future times up to the largest unit: a token expiring in a day
 * would read "next year".)
 */
export function relativeTime(date: Date, now: number = Date.now()): string {
  const formatter = new Intl.RelativeTimeFormat(document.documentElement.lang || 'en', {
    numeric: 'auto'
  });
  const delta = date.getTime() - now;
  // to the minute beyond a minute, so that "in 1 day" taken a second later stays a day
  const rounded = Math.abs(delta) < 60_000 ? delta : Math.round(delta / 60_000) * 60_000;
  for (const [unit, ms] of TIME_UNITS) {
    if (Math.abs(rounded) >= ms) {
      return formatter.format(Math.trunc(rounded / ms), unit);
    }
  }
  return formatter.format(0, 'second');
}

function When(props: { iso: string | null; never?: string; prefix?: string }): JSX.Element {
  if (!props.iso) {
    return <span>{props.never ?? 'never'}</span>;
  }
  const date = new Date(props.iso);
  return (
    <time dateTime={props.iso} title={Time.format(date)}>
      {props.prefix ?? ''}
      {relativeTime(date)}
    </time>
  );
}

function portsText(ports: number[] | null): string {
  return ports && ports.length > 0 ? ports.join(', ') : 'all allowed ports';
}

/** Only http(s) links from the ELN are followed. */
export function safeUrl(url: string | null | undefined): string | null {
  if (typeof url !== 'string') {
    return null;
  }
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}

/** What a section says when the server extension could not be asked. */
function unavailable(model: LimsModel): JSX.Element | null {
  if (model.serverState === 'missing' || model.serverState === 'unreachable' || model.serverState === 'error') {
    return <Empty>Not available: see the message above.</Empty>;
  }
  if (model.serverState === 'checking') {
    return <Empty>Loading…</Empty>;
  }
  return null;
}

// ---------------------------------------------------------------------------
// header

function ServerBanner(props: { model: LimsModel }): JSX.Element | null {
  const { model } = props;
  if (model.serverState === 'checking') {
    return <p className="jp-LimsBridge-Banner jp-LimsBridge-Banner-info">Checking the server…</p>;
  }
  if (!model.serverMessage) {
    return null;
  }
  return (
    <div className={`jp-LimsBridge-Banner jp-LimsBridge-Banner-${model.serverState}`} role="alert">
      {model.serverMessage}
    </div>
  );
}

// ---------------------------------------------------------------------------
// Proxy

const MODE_LABELS: Record<ProxyMode, string> = {
  token: 'Token required',
  open: 'Open to anyone',
  disabled: 'Disabled'
};

const MODE_HINTS: Record<ProxyMode, string> = {
  token: 'Reachable from your own browser session, or by a client holding a proxy token.',
  open: 'Anyone who can reach this server can use the allowed ports, without a token.',
  disabled: 'The proxy refuses every request.'
};

function ProxySection(props: { model: LimsModel }): JSX.Element {
  const { model } = props;
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  const mode = model.proxyMode;
  const ports = model.allowedPorts;
  const newToken = model.newToken;
  if (mode === null) {
    return unavailable(model) ?? <Empty>The proxy state is unknown.</Empty>;
  }
  return (
    <div className="jp-LimsBridge-Body">
      <label className="jp-LimsBridge-Field">
        <span className="jp-LimsBridge-Label">Mode</span>
        <HTMLSelect
          className="jp-LimsBridge-ModeSelect"
          aria-label="Proxy mode"
          value={mode}
          disabled={busy}
          options={PROXY_MODES.map(m => ({ value: m, label: MODE_LABELS[m] }))}
          onChange={async event => {
            setBusy(true);
            setError(await model.setProxyMode(event.target.value as ProxyMode));
            setBusy(false);
          }}
        />
      </label>
      <p className={mode === 'open' ? 'jp-LimsBridge-Warning' : 'jp-LimsBridge-Hint'}>{MODE_HINTS[mode]}</p>
      <ErrorLine message={error} />
      <div className="jp-LimsBridge-Label">Allowed ports</div>
      {ports.length === 0 ? (
        <Empty>
          No port is allowed. The server's operator lists them in <code>allowed_ports</code>.
        </Empty>
      ) : (
        <ul className="jp-LimsBridge-PortList" aria-label="Allowed ports">
          {ports.map(port => {
            const url = proxyUrl(model.settings, port);
            const scoped =
              newToken && (!newToken.ports || newToken.ports.length === 0 || newToken.ports.includes(port));
            const token = mode === 'open' ? undefined : scoped ? newToken!.token : '<token>';
            return (
              <li key={port} className="jp-LimsBridge-Port" data-port={port}>
                <div className="jp-LimsBridge-PortNumber">Port {port}</div>
                <CopyField text={url} what={`URL of port ${port}`} />
                {mode !== 'disabled' && (
                  <CopyField
                    className="jp-LimsBridge-Curl"
                    text={curlLine(model.settings, port, token)}
                    what={`curl command for port ${port}`}
                  />
                )}
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}

// ---------------------------------------------------------------------------
// Tokens

const EXPIRY_CHOICES: Array<{ value: number; label: string }> = [
  { value: 3600, label: '1 hour' },
  { value: 86400, label: '1 day' },
  { value: 7 * 86400, label: '7 days' },
  { value: 30 * 86400, label: '30 days' },
  { value: 0, label: 'Never' }
];

function TokensSection(props: { model: LimsModel; settings: () => IPanelSettings }): JSX.Element {
  const { model } = props;
  const part = model.tokens;
  const [error, setError] = React.useState<string | null>(null);
  if (part.unavailable) {
    return <Empty>Proxy tokens are not available on this server.</Empty>;
  }
  if (part.value === null && !part.error) {
    return unavailable(model) ?? <Empty>Loading…</Empty>;
  }
  return (
    <div className="jp-LimsBridge-Body">
      <NewTokenBox model={model} />
      <ErrorLine message={part.error ?? error} />
      {part.value === null ? null : part.value.tokens.length === 0 ? (
        <Empty>No proxy tokens yet.</Empty>
      ) : (
        <ul className="jp-LimsBridge-TokenList" aria-label="Proxy tokens">
          {part.value.tokens.map(token => (
            <li key={token.id} className="jp-LimsBridge-Token" data-token-id={token.id}>
              <div className="jp-LimsBridge-TokenHead">
                <span className="jp-LimsBridge-TokenName">{token.name}</span>
                <Button
                  small
                  minimal
                  className="jp-LimsBridge-RevokeButton"
                  title={`Revoke token ${token.name}`}
                  aria-label={`Revoke token ${token.name}`}
                  onClick={async () => {
                    const result = await showDialog({
                      title: `Revoke the token "${token.name}"?`,
                      body:
                        'Clients that use it are refused from now on. ' +
                        'This cannot be undone.',
                      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Revoke' })]
                    });
                    if (result.button.accept) {
                      setError(await model.revokeToken(token.id));
                    }
                  }}
                >
                  <Icon icon={deleteIcon} />
                  <span>Revoke</span>
                </Button>
              </div>
              <dl className="jp-LimsBridge-Meta">
                <dt>Ports</dt>
                <dd>{portsText(token.ports)}</dd>
                <dt>Created</dt>
                <dd>
                  <When iso={token.createdAt} never="unknown" />
                </dd>
                <dt>Expires</dt>
                <dd>
                  <When iso={token.expiresAt} />
                </dd>
                <dt>Last used</dt>
                <dd>
                  <When iso={token.lastUsedAt} />
                </dd>
              </dl>
            </li>
          ))}
        </ul>
      )}
      <CreateTokenForm model={model} defaultExpiry={props.settings().defaultTokenExpiry} />
    </div>
  );
}

function NewTokenBox(props: { model: LimsModel }): JSX.Element | null {
  const { model } = props;
  const token = model.newToken;
  const box = React.useRef<HTMLElement>(null);
  // bring the secret into view and put the keyboard focus on it, once per token
  React.useEffect(() => {
    if (box.current) {
      box.current.scrollIntoView({ block: 'nearest' });
      box.current.focus({ preventScroll: true });
    }
  }, [token?.id]);
  if (!token) {
    return null;
  }
  const firstPort = token.ports && token.ports.length > 0 ? token.ports[0] : model.allowedPorts[0];
  return (
    <section
      ref={box}
      tabIndex={-1}
      className="jp-LimsBridge-NewToken"
      aria-label={`New token ${token.name}`}
    >
      <div className="jp-LimsBridge-NewTokenTitle">New token “{token.name}”</div>
      <p className="jp-LimsBridge-Notice">
        <strong>Copy it now: you will not see it again.</strong> Anyone holding it can reach{' '}
        {token.ports && token.ports.length > 0 ? `port ${token.ports.join(', ')}` : 'every allowed port'}{' '}
        through the proxy.
      </p>
      <CopyField className="jp-LimsBridge-Secret" text={token.token} what="the new token" />
      {firstPort !== undefined && (
        <CopyField
          className="jp-LimsBridge-Curl"
          text={curlLine(model.settings, firstPort, token.token)}
          what={`curl command with the new token for port ${firstPort}`}
        />
      )}
      <Button className="jp-LimsBridge-Primary" onClick={() => model.dismissNewToken()}>
        I have copied it
      </Button>
    </section>
  );
}

function CreateTokenForm(props: { model: LimsModel; defaultExpiry: number }): JSX.Element {
  const { model } = props;
  const allowed = model.allowedPorts;
  const [name, setName] = React.useState('');
  const [ports, setPorts] = React.useState<number[]>([]);
  const [portsText, setPortsText] = React.useState('');
  const [expiry, setExpiry] = React.useState(props.defaultExpiry);
  const [busy, setBusy] = React.useState(false);
  const [error, setError] = React.useState<string | null>(null);
  const [open, setOpen] = React.useState(false);
  const asCheckboxes = allowed.length > 0 && allowed.length <= 16;

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    let chosen = ports;
    if (!asCheckboxes) {
      chosen = portsText
        .split(/[\s,]+/)
        .filter(Boolean)
        .map(Number);
      if (chosen.some(p => !Number.isInteger(p) || p < 1 || p > 65535)) {
        setError('Ports must be numbers separated by commas.');
        return;
      }
    }
    setBusy(true);
    const message = await model.createToken({
      name: name.trim(),
      ...(chosen.length > 0 ? { ports: chosen } : {}),
      ...(expiry > 0 ? { expiresIn: expiry } : {})
    });
    setBusy(false);
    setError(message);
    if (!message) {
      setName('');
      setPorts([]);
      setPortsText('');
      setOpen(false);
    }
  };

  if (!open) {
    return (
      <Button className="jp-LimsBridge-Secondary" onClick={() => setOpen(true)}>
        <Icon icon={addIcon} />
        <span>New token…</span>
      </Button>
    );
  }

  return (
    <form className="jp-LimsBridge-Form" aria-label="Create a proxy token" onSubmit={submit}>
      <div className="jp-LimsBridge-FormTitle">Create a token</div>
      <label className="jp-LimsBridge-Field">
        <span className="jp-LimsBridge-Label">Name</span>
        <input
          autoFocus
          className="jp-mod-styled jp-LimsBridge-Input"
          name="name"
          required
          maxLength={100}
          placeholder="e.g. ci, eln-widget"
          value={name}
          onChange={e => setName(e.target.value)}
        />
      </label>
      {asCheckboxes ? (
        <fieldset className="jp-LimsBridge-Field jp-LimsBridge-PortChoices">
          <legend className="jp-LimsBridge-Label">Ports (none ticked: all allowed ports)</legend>
          {allowed.map(port => (
            <label key={port} className="jp-LimsBridge-PortChoice">
              <input
                type="checkbox"
                className="jp-mod-styled"
                checked={ports.includes(port)}
                onChange={e =>
                  setPorts(e.target.checked ? [...ports, port] : ports.filter(p => p !== port))
                }
              />
              {port}
            </label>
          ))}
        </fieldset>
      ) : (
        <label className="jp-LimsBridge-Field">
          <span className="jp-LimsBridge-Label">Ports (empty: all allowed ports)</span>
          <input
            className="jp-mod-styled jp-LimsBridge-Input"
            name="ports"
            placeholder="e.g. 8050, 9000"
            value={portsText}
            onChange={e => setPortsText(e.target.value)}
          />
        </label>
      )}
      <label className="jp-LimsBridge-Field">
        <span className="jp-LimsBridge-Label">Expires after</span>
        <HTMLSelect
          aria-label="Expires after"
          value={expiry}
          options={EXPIRY_CHOICES}
          onChange={e => setExpiry(Number(e.target.value))}
        />
      </label>
      <ErrorLine message={error} />
      <div className="jp-LimsBridge-Buttons">
        <Button type="submit" className="jp-LimsBridge-Primary" disabled={busy || !name.trim()}>
          Create token
        </Button>
        <Button type="button" className="jp-LimsBridge-Secondary" onClick={() => setOpen(false)}>
          Cancel
        </Button>
      </div>
    </form>
  );
}

// ---------------------------------------------------------------------------
// Recent ELN entries

function entityLabel(entry: IRecentEntry): string {
  const e = entry.entity;
  return e.title || `${e.type} ${e.id}`;
}

function RecentSection(props: { model: LimsModel; openPath: (path: string) => void }): JSX.Element {
  const recent = [...(props.model.status?.recent ?? [])].sort((a, b) =>
    (b.openedAt ?? '').localeCompare(a.openedAt ?? '')
  );
  if (props.model.status === null) {
    return unavailable(props.model) ?? <Empty>Not available.</Empty>;
  }
  if (recent.length === 0) {
    return <Empty>No ELN entry was opened here yet. Use “Open in Jupyter” in your ELN.</Empty>;
  }
  return (
    <ul className="jp-LimsBridge-RecentList" aria-label="Recent ELN entries">
      {recent.map(entry => {
        const url = safeUrl(entry.entity.url);
        const label = entityLabel(entry);
        return (
          <li key={entry.path} className="jp-LimsBridge-RecentItem" data-path={entry.path}>
            <button
              className="jp-LimsBridge-RecentOpen"
              title={`Open ${entry.path}`}
              onClick={() => props.openPath(entry.path)}
            >
              <Icon icon={notebookIcon} />
              <span className="jp-LimsBridge-RecentText">
                <span className="jp-LimsBridge-RecentTitle">{label}</span>
                <span className="jp-LimsBridge-RecentMeta">
                  {entry.entity.type} {entry.entity.id} · <When iso={entry.openedAt} />
                </span>
              </span>
            </button>
            {url && (
              <a
                className="jp-LimsBridge-ElnAnchor"
                href={url}
                target="_blank"
                rel="noopener noreferrer"
                title={`Open ${label} in the ELN`}
                aria-label={`Open ${label} in the ELN`}
              >
                <Icon icon={launchIcon} />
              </a>
            )}
          </li>
        );
      })}
    </ul>
  );
}

// ---------------------------------------------------------------------------
// Data

const STATE_ORDER: Record<string, number> = { failed: 0, running: 1, queued: 2, done: 3 };

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function DataSection(props: { model: LimsModel }): JSX.Element {
  const { model } = props;
  const part = model.staging;
  const [error, setError] = React.useState<string | null>(null);
  if (part.unavailable) {
    return <Empty>Data staging is not available on this server.</Empty>;
  }
  if (part.value === null) {
    return part.error ? <ErrorLine message={part.error} /> : unavailable(model) ?? <Empty>Loading…</Empty>;
  }
  const jobs = [...part.value].sort((a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9));
  return (
    <div className="jp-LimsBridge-Body">
      <ErrorLine message={part.error ?? error} />
      {jobs.length === 0 ? (
        <Empty>No data is being staged.</Empty>
      ) : (
        <ul className="jp-LimsBridge-JobList" aria-label="Data staging jobs">
          {jobs.map(job => (
            <Job key={job.id} job={job} onRetry={async () => setError(await model.retryStagingJob(job.id))} />
          ))}
        </ul>
      )}
    </div>
  );
}

function Job(props: { job: IStagingJob; onRetry: () => void }): JSX.Element {
  const { job } = props;
  const total = job.bytesTotal ?? 0;
  let amount = total > 0 ? `${formatBytes(job.bytesDone)} of ${formatBytes(total)}` : formatBytes(job.bytesDone);
  if (job.state === 'running' && job.speed) {
    amount += ` · ${formatBytes(job.speed)}/s`;
  }
  const failure = [job.message, job.reason && `(${job.reason})`].filter(Boolean).join(' ') || 'failed';
  return (
    <li className={`jp-LimsBridge-Job jp-LimsBridge-Job-${job.state}`} data-job-id={job.id}>
      <div className="jp-LimsBridge-JobHead">
        <span className="jp-LimsBridge-JobName" title={job.path}>
          {job.name}
        </span>
        <span className="jp-LimsBridge-JobState">{job.state}</span>
      </div>
      {(job.state === 'running' || job.state === 'queued') && (
        <progress
          className="jp-LimsBridge-Progress"
          aria-label={`Download of ${job.name}`}
          max={total > 0 ? total : undefined}
          value={total > 0 ? job.bytesDone : undefined}
        />
      )}
      <div className="jp-LimsBridge-JobMeta">{job.state === 'failed' ? failure : amount}</div>
      {job.state === 'failed' && (
        <Button small className="jp-LimsBridge-Secondary" aria-label={`Retry ${job.name}`} onClick={props.onRetry}>
          <Icon icon={refreshIcon} />
          <span>Retry</span>
        </Button>
      )}
    </li>
  );
}
