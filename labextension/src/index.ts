/**
 * jupyter-lims-bridge's JupyterLab plugins: the "LIMS" sidebar panel and the
 * notebook toolbar link back to the ELN.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { LimsModel } from './model';
import { PLUGIN_NAMESPACE } from './tokens';
import { ElnLinkExtension } from './widgets/elnlink';
import { SaveToElnExtension } from './widgets/savebutton';
import { LimsPanel } from './widgets/panel';
import { DEFAULT_SETTINGS, IPanelSettings } from './widgets/settings';

namespace CommandIDs {
  export const showPanel = 'lims-bridge:show-panel';
  export const refresh = 'lims-bridge:refresh';
}

const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN_NAMESPACE}:plugin`,
  description: 'The LIMS sidebar: proxy mode and tokens, recent ELN entries, data staging.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const model = new LimsModel(app.serviceManager.serverSettings);
    let settings: IPanelSettings = { ...DEFAULT_SETTINGS };
    const panel = new LimsPanel({
      model,
      settings: () => settings,
      openPath: path => void app.commands.execute('docmanager:open', { path })
    });
    app.shell.add(panel, 'left', { rank: 800 });
    if (restorer) {
      restorer.add(panel, PLUGIN_NAMESPACE);
    }

    if (settingRegistry) {
      settingRegistry
        .load(panelPlugin.id)
        .then(loaded => {
          const read = () => {
            settings = {
              refreshInterval: Number(
                loaded.get('refreshInterval').composite ?? DEFAULT_SETTINGS.refreshInterval
              ),
              defaultTokenExpiry: Number(
                loaded.get('defaultTokenExpiry').composite ?? DEFAULT_SETTINGS.defaultTokenExpiry
              )
            };
            panel.restartTimer();
          };
          read();
          loaded.changed.connect(read);
        })
        .catch(reason => console.error('jupyter-lims-bridge: cannot load settings', reason));
    }

    app.commands.addCommand(CommandIDs.showPanel, {
      label: 'Show LIMS Panel',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh LIMS Panel',
      execute: () => model.refresh()
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.showPanel, category: 'LIMS' });
      palette.addItem({ command: CommandIDs.refresh, category: 'LIMS' });
    }

    // Check the server extension at once, so a missing or different server
    // extension is reported even before the panel is opened.
    void model.refresh().then(() => {
      if (model.serverMessage) {
        console.warn(`jupyter-lims-bridge: ${model.serverMessage}`);
      }
    });
  }
};

const elnLinkPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN_NAMESPACE}:eln-link`,
  description: 'A notebook toolbar link back to the ELN entry a notebook was opened from.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    app.docRegistry.addWidgetExtension('Notebook', new ElnLinkExtension());
  }
};

const saveToElnPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN_NAMESPACE}:save-to-eln`,
  description: 'A notebook toolbar button that saves the notebook to its ELN entry.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const refreshPanel = () => {
      // the panel's recent entries show the last save
      if (app.commands.hasCommand(CommandIDs.refresh)) {
        void app.commands.execute(CommandIDs.refresh);
      }
    };
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new SaveToElnExtension(app.serviceManager.serverSettings, refreshPanel)
    );
  }
};

export default [panelPlugin, elnLinkPlugin, saveToElnPlugin];
