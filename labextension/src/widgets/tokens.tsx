/**
 * The Tokens section: the proxy tokens, the secret of a new one (shown once), and the form
 * that creates one.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { addIcon, Button, deleteIcon, HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { curlLine } from '../api';
import { portsText } from '../format';
import { LimsModel } from '../model';
import { CopyField, Empty, ErrorLine, Icon, unavailable, When } from './common';
import { IPanelSettings } from './settings';

const EXPIRY_CHOICES: Array<{ value: number; label: string }> = [
  { value: 3600, label: '1 hour' },
  { value: 86400, label: '1 day' },
  { value: 7 * 86400, label: '7 days' },
  { value: 30 * 86400, label: '30 days' },
  { value: 0, label: 'Never' }
];

export function TokensSection(props: {
  model: LimsModel;
  settings: () => IPanelSettings;
}): JSX.Element {
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
                <span className="jp-LimsBridge-TokenName" title={token.name}>
                  {token.name}
                </span>
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
                        'Clients that use it are refused from now on. ' + 'This cannot be undone.',
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
        {token.ports && token.ports.length > 0
          ? `port ${token.ports.join(', ')}`
          : 'every allowed port'}{' '}
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
