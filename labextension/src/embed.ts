/**
 * Messages to the ELN page that shows JupyterLab in an iframe (DESIGN.md,
 * "Embedding JupyterLab in the ELN"). A message goes to the parent only when
 * the parent's exact origin is one of the server's `embed_origins`, which the
 * server puts in the page config (`limsBridgeEmbedOrigins`); never `'*'`.
 *
 * Usage (e.g. the toolbar's Save to ELN):
 *   postToParent('lims-bridge:saved', { path, version });
 * Returns whether the message was addressed to an allowed parent.
 */
import { PageConfig } from '@jupyterlab/coreutils';

/** The message types of the contract; `detail` is spread into the message. */
export type EmbedMessageType = 'lims-bridge:opened' | 'lims-bridge:saved' | 'lims-bridge:error';

/** The origins the server allows to embed it (empty: not embeddable). */
export function embedOrigins(): string[] {
  // the page config holds the server's list as JSON: an array here
  const raw: unknown = PageConfig.getOption('limsBridgeEmbedOrigins');
  let list: unknown = raw;
  if (typeof raw === 'string') {
    try {
      list = raw ? JSON.parse(raw) : [];
    } catch {
      list = [];
    }
  }
  return Array.isArray(list) ? list.filter((o): o is string => typeof o === 'string') : [];
}

/** The parent's origin when the browser tells it (Chromium, Safari), else null. */
function parentOrigin(): string | null {
  const ancestors = window.location.ancestorOrigins;
  return ancestors && ancestors.length ? ancestors[0] : null;
}

/**
 * Post `{type, ...detail}` to the embedding page. Without `ancestorOrigins`
 * (Firefox) each allowed origin is addressed: the browser delivers the message
 * only to a parent of exactly that origin.
 */
export function postToParent(
  type: EmbedMessageType,
  detail: Record<string, unknown> = {}
): boolean {
  if (window.parent === window) {
    return false;
  }
  const allowed = embedOrigins();
  const known = parentOrigin();
  const targets = known ? allowed.filter(origin => origin === known) : allowed;
  for (const origin of targets) {
    window.parent.postMessage({ ...detail, type }, origin);
  }
  return targets.length > 0;
}
