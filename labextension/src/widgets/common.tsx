/**
 * Small React parts every panel section uses: a collapsible section, icons,
 * copy fields, error and empty lines, relative times.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { Time } from '@jupyterlab/coreutils';
import {
  Button,
  caretDownIcon,
  caretRightIcon,
  checkIcon,
  copyIcon,
  LabIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import { relativeTime } from '../format';
import { LimsModel } from '../model';

/** A collapsible section with a header in the style of JupyterLab's accordion titles. */
export function Section(props: {
  name: string;
  label: string;
  children: React.ReactNode;
}): JSX.Element {
  const [expanded, setExpanded] = React.useState(true);
  const bodyId = `jp-LimsBridge-Section-${props.name}-body`;
  return (
    <section
      className={`jp-LimsBridge-Section jp-LimsBridge-Section-${props.name}`}
      aria-label={props.label}
    >
      <h3 className="jp-LimsBridge-SectionTitle">
        <button
          aria-expanded={expanded}
          aria-controls={bodyId}
          onClick={() => setExpanded(!expanded)}
        >
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

export function Icon(props: { icon: LabIcon }): JSX.Element {
  return <props.icon.react tag="span" className="jp-LimsBridge-Icon" elementPosition="center" />;
}

/** A button that copies `text`, saying "Copied" for a moment. */
export function CopyButton(props: { text: string; what: string }): JSX.Element {
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

/** Where a URL or a command line may break: after `/` (not inside `://`), `?`, `&`. */
const BREAK_AFTER = /(?<=[?&]|\/(?!\/))/;
/** A piece longer than this may still break anywhere rather than overflow. */
const LONGEST_UNBROKEN = 40;

/**
 * Text with line-break opportunities (`<wbr>`) at the sensible points of a URL or
 * a command line, and spaces; between them no break (not after a `-` of
 * `X-Proxy-Token`), unless a piece is too long to fit. Copying it copies the text
 * unchanged.
 */
export function Breakable(props: { text: string }): JSX.Element {
  const parts = props.text.split(BREAK_AFTER);
  return (
    <>
      {parts.map((part, i) => (
        <React.Fragment key={i}>
          {part.split(/( +)/).map((piece, j) =>
            piece.length === 0 || piece.startsWith(' ') || piece.length > LONGEST_UNBROKEN ? (
              piece
            ) : (
              <span key={j} className="jp-LimsBridge-NoBreak">
                {piece}
              </span>
            )
          )}
          {i < parts.length - 1 && <wbr />}
        </React.Fragment>
      ))}
    </>
  );
}

/**
 * Read-only text to copy, selectable as a whole: wraps after `/`, `?`, `&` and
 * spaces, and within a part only when one part is wider than the field.
 */
export function CopyField(props: { text: string; what: string; className?: string }): JSX.Element {
  return (
    <div className={`jp-LimsBridge-CopyField ${props.className ?? ''}`}>
      <code className="jp-LimsBridge-Code" aria-label={props.what}>
        <Breakable text={props.text} />
      </code>
      <CopyButton text={props.text} what={props.what} />
    </div>
  );
}

export function ErrorLine(props: { message: string | null }): JSX.Element | null {
  return props.message ? (
    <p className="jp-LimsBridge-Error" role="alert">
      {props.message}
    </p>
  ) : null;
}

export function Empty(props: { children: React.ReactNode }): JSX.Element {
  return <p className="jp-LimsBridge-Empty">{props.children}</p>;
}

export function When(props: { iso: string | null; never?: string; prefix?: string }): JSX.Element {
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

/** What a section says when the server extension could not be asked. */
export function unavailable(model: LimsModel): JSX.Element | null {
  if (
    model.serverState === 'missing' ||
    model.serverState === 'unreachable' ||
    model.serverState === 'error'
  ) {
    return <Empty>Not available: see the message above.</Empty>;
  }
  if (model.serverState === 'checking') {
    return <Empty>Loading…</Empty>;
  }
  return null;
}
