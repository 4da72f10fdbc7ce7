/**
 * The Proxy section: the proxy mode and, per allowed port, its URL and a curl line.
 */
import { HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { curlLine, proxyUrl } from '../api';
import { LimsModel } from '../model';
import { ProxyMode, PROXY_MODES } from '../tokens';
import { CopyField, Empty, ErrorLine, unavailable } from './common';

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

export function ProxySection(props: { model: LimsModel }): JSX.Element {
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
      <p className={mode === 'open' ? 'jp-LimsBridge-Warning' : 'jp-LimsBridge-Hint'}>
        {MODE_HINTS[mode]}
      </p>
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
              newToken &&
              (!newToken.ports || newToken.ports.length === 0 || newToken.ports.includes(port));
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
