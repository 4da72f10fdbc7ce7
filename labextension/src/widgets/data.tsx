/**
 * The Data section: the data staging jobs, failed ones first, with progress and Retry.
 */
import { Button, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes } from '../format';
import { LimsModel } from '../model';
import { IStagingJob } from '../tokens';
import { Empty, ErrorLine, Icon, unavailable } from './common';

const STATE_ORDER: Record<string, number> = { failed: 0, running: 1, queued: 2, done: 3 };

export function DataSection(props: { model: LimsModel }): JSX.Element {
  const { model } = props;
  const part = model.staging;
  const [error, setError] = React.useState<string | null>(null);
  if (part.unavailable) {
    return <Empty>Data staging is not available on this server.</Empty>;
  }
  if (part.value === null) {
    return part.error ? (
      <ErrorLine message={part.error} />
    ) : (
      (unavailable(model) ?? <Empty>Loading…</Empty>)
    );
  }
  const jobs = [...part.value].sort(
    (a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9)
  );
  return (
    <div className="jp-LimsBridge-Body">
      <ErrorLine message={part.error ?? error} />
      {jobs.length === 0 ? (
        <Empty>No data is being staged.</Empty>
      ) : (
        <ul className="jp-LimsBridge-JobList" aria-label="Data staging jobs">
          {jobs.map(job => (
            <Job
              key={job.id}
              job={job}
              onRetry={async () => setError(await model.retryStagingJob(job.id))}
            />
          ))}
        </ul>
      )}
    </div>
  );
}

function Job(props: { job: IStagingJob; onRetry: () => void }): JSX.Element {
  const { job } = props;
  const total = job.bytesTotal ?? 0;
  let amount =
    total > 0
      ? `${formatBytes(job.bytesDone)} of ${formatBytes(total)}`
      : formatBytes(job.bytesDone);
  if (job.state === 'running' && job.speed) {
    amount += ` · ${formatBytes(job.speed)}/s`;
  }
  const failure =
    [job.message, job.reason && `(${job.reason})`].filter(Boolean).join(' ') || 'failed';
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
        <Button
          small
          className="jp-LimsBridge-Secondary"
          aria-label={`Retry ${job.name}`}
          onClick={props.onRetry}
        >
          <Icon icon={refreshIcon} />
          <span>Retry</span>
        </Button>
      )}
    </li>
  );
}
