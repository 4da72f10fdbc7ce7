/**
 * The notebook toolbar item "ELN: <entity title> ↗" for notebooks opened from
 * the ELN. It reads the provenance the server wrote under notebook metadata
 * `lims` and shows only http(s) links; other notebooks get no item.
 */
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { INotebookProvenance, NOTEBOOK_METADATA_KEY } from '../tokens';
import { safeUrl } from '../format';

export class ElnLink extends Widget {
  constructor(context: DocumentRegistry.IContext<INotebookModel>) {
    super({ node: document.createElement('div') });
    this.addClass('jp-LimsBridge-ElnLink');
    this._anchor = document.createElement('a');
    this._anchor.target = '_blank';
    this._anchor.rel = 'noopener noreferrer';
    this.node.appendChild(this._anchor);
    this._model = context.model;
    this._model.metadataChanged.connect(this._update, this);
    this._update();
    // the metadata arrives with the file: loading it does not always signal a change
    void context.ready.then(() => {
      if (!this.isDisposed) {
        this._update();
      }
    });
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.metadataChanged.disconnect(this._update, this);
    super.dispose();
  }

  private _update(): void {
    const provenance = this._model.getMetadata(NOTEBOOK_METADATA_KEY) as
      INotebookProvenance | undefined;
    const entity = provenance?.entity;
    const url = safeUrl(entity?.url);
    if (!entity || !url) {
      this.hide();
      return;
    }
    const title = entity.title || `${entity.type} ${entity.id}`;
    this._anchor.href = url;
    this._anchor.textContent = `ELN: ${title} ↗`;
    this._anchor.title = `Open ${title} (${entity.type} ${entity.id}) in the ELN: ${url}`;
    this.show();
  }

  private _anchor: HTMLAnchorElement;
  private _model: INotebookModel;
}

/** Adds an `ElnLink` to every notebook's toolbar. */
export class ElnLinkExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const link = new ElnLink(context);
    panel.toolbar.insertItem(10, 'limsElnLink', link);
    return link;
  }
}
