/**
 * The last Save to ELN of a recent entry (time, version), as the panel's recent
 * entries show it. Nothing when the notebook was never saved to the ELN.
 */
import * as React from 'react';

import { ISaveRecord } from '../tokens';
import { When } from './common';

export function LastSave(props: { save?: ISaveRecord | null }): JSX.Element | null {
  const save = props.save;
  if (!save) {
    return null;
  }
  const version = save.eln?.version;
  return (
    <span className="jp-LimsBridge-LastSave">
      {' · saved to ELN '}
      <When iso={save.savedAt} />
      {version !== null && version !== undefined ? ` (version ${version})` : ''}
    </span>
  );
}
