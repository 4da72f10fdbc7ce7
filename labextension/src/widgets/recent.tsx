/**
 * The Recent ELN entries section: notebooks opened from the ELN, newest first, with links
 * back to their entries.
 */
import { launchIcon, notebookIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { safeUrl } from '../format';
import { LimsModel } from '../model';
import { IRecentEntry } from '../tokens';
import { Empty, Icon, unavailable, When } from './common';
import { LastSave } from './lastsave';

function entityLabel(entry: IRecentEntry): string {
  const e = entry.entity;
  return e.title || `${e.type} ${e.id}`;
}

export function RecentSection(props: {
  model: LimsModel;
  openPath: (path: string) => void;
}): JSX.Element {
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
                  <LastSave save={entry.lastSave} />
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
