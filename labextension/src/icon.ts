import { LabIcon } from '@jupyterlab/ui-components';

/** A flask: the LIMS panel's icon. Themed through JupyterLab's `jp-icon3` class. */
const FLASK_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g fill="none">
    <path class="jp-icon3" stroke="#616161" stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round"
      d="M8.5 2.8h7M10 3v6.2L4.6 18.6A1.8 1.8 0 0 0 6.2 21.3h11.6a1.8 1.8 0 0 0 1.6-2.7L14 9.2V3"/>
  </g>
  <path class="jp-icon3" fill="#616161" d="M7.5 14.2h9l2.1 3.7a1 1 0 0 1-.9 1.5H6.3a1 1 0 0 1-.9-1.5z"/>
</svg>`;

export const limsIcon = new LabIcon({ name: 'jupyter-lims-bridge:flask', svgstr: FLASK_SVG });
