/**
 * The Recent ELN entries section: one row per ELN entry, newest first, with a link
 * back to the entry; an entry opened as several notebooks ("Open a new copy")
 * lists its copies under its row.
 */
import { launchIcon, notebookIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { safeUrl } from '../format';
import { LimsModel } from '../model';
import { IRecentEntry } from '../tokens';
import { Empty, Icon, unavailable, When } from './common';
import { LastSave } from './lastsave';

/** One ELN entry and its notebooks, newest first. */
export interface IEntryGroup {
  key: string;
  latest: IRecentEntry;
  copies: IRecentEntry[];
}

function entityLabel(entry: IRecentEntry): string {
  const e = entry.entity;
  return e.title || `${e.type} ${e.id}`;
}

function fileName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Group recent notebooks by ELN entry (type and id), in the order of their newest copy. */
export function groupByEntry(entries: IRecentEntry[]): IEntryGroup[] {
  const sorted = [...entries].sort((a, b) => (b.openedAt ?? '').localeCompare(a.openedAt ?? ''));
  const groups = new Map<string, IEntryGroup>();
  for (const entry of sorted) {
    const key = JSON.stringify([entry.entity.type, entry.entity.id]);
    const group = groups.get(key);
    if (group) {
      group.copies.push(entry);
    } else {
      groups.set(key, { key, latest: entry, copies: [entry] });
    }
  }
  return [...groups.values()];
}

export function RecentSection(props: {
  model: LimsModel;
  openPath: (path: string) => void;
}): JSX.Element {
  if (props.model.status === null) {
    return unavailable(props.model) ?? <Empty>Not available.</Empty>;
  }
  const groups = groupByEntry(props.model.status.recent ?? []);
  if (groups.length === 0) {
    return <Empty>No ELN entry was opened here yet. Use “Open in Jupyter” in your ELN.</Empty>;
  }
  return (
    <ul className="jp-LimsBridge-RecentList" aria-label="Recent ELN entries">
      {groups.map(({ key, latest, copies }) => {
        const url = safeUrl(latest.entity.url);
        const label = entityLabel(latest);
        const several = copies.length > 1;
        return (
          <li
            key={key}
            className="jp-LimsBridge-RecentItem"
            data-path={latest.path}
            data-copies={copies.length}
          >
            <div className="jp-LimsBridge-RecentRow">
              <button
                className="jp-LimsBridge-RecentOpen"
                title={`Open ${label}: ${latest.path}`}
                onClick={() => props.openPath(latest.path)}
              >
                <Icon icon={notebookIcon} />
                <span className="jp-LimsBridge-RecentText">
                  <span className="jp-LimsBridge-RecentTitle" title={label}>
                    {label}
                  </span>
                  <span className="jp-LimsBridge-RecentMeta">
                    {latest.entity.type} {latest.entity.id}
                    {several ? ` · ${copies.length} notebooks` : ''} ·{' '}
                    <When iso={latest.openedAt} />
                    <LastSave save={latest.lastSave} />
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
            </div>
            {several && (
              <ul className="jp-LimsBridge-RecentCopies" aria-label={`Notebooks of ${label}`}>
                {copies.map(copy => (
                  <li key={copy.path} className="jp-LimsBridge-RecentCopy" data-path={copy.path}>
                    <button
                      className="jp-LimsBridge-RecentCopyOpen"
                      title={`Open ${copy.path}`}
                      onClick={() => props.openPath(copy.path)}
                    >
                      <span className="jp-LimsBridge-RecentCopyName">{fileName(copy.path)}</span>
                      <span className="jp-LimsBridge-RecentMeta">
                        <When iso={copy.openedAt} />
                        <LastSave save={copy.lastSave} />
                      </span>
                    </button>
                  </li>
                ))}
              </ul>
            )}
          </li>
        );
      })}
    </ul>
  );
}
