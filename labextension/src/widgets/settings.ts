/** The panel's user settings (schema/plugin.json) and their defaults. */

/** User settings the panel reads (schema/plugin.json). */
export interface IPanelSettings {
  /** Seconds between two refreshes while the panel is visible. */
  refreshInterval: number;
  /** Preselected expiry of a new token in seconds; 0 = never. */
  defaultTokenExpiry: number;
}

export const DEFAULT_SETTINGS: IPanelSettings = { refreshInterval: 5, defaultTokenExpiry: 86400 };
