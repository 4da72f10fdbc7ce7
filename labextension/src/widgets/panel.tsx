/**
 * The "LIMS" sidebar: a JupyterLab SidePanel holding one collapsible section
 * per capability (Proxy, Tokens, Recent ELN entries, Data) in a single
 * scrolling column (an accordion's fixed split left each part too little
 * room at a sidebar's size). The sections render the model and call its
 * actions; they never call the server.
 */
import {
  ReactWidget,
  refreshIcon,
  SidePanel,
  ToolbarButtonComponent,
  UseSignal
} from '@jupyterlab/ui-components';
import { Panel } from '@lumino/widgets';
import * as React from 'react';

import { limsIcon } from '../icon';
import { LimsModel } from '../model';
import { Section } from './common';
import { DataSection } from './data';
import { ProxySection } from './proxy';
import { RecentSection } from './recent';
import { IPanelSettings } from './settings';
import { TokensSection } from './tokens';

export interface IPanelOptions {
  model: LimsModel;
  /** Open a notebook by its server path. */
  openPath: (path: string) => void;
  settings: () => IPanelSettings;
}

/** The sidebar panel: the server banner in its header, the sections below in one column. */
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
