/**
 * Formatting and link checks shared by the panel and the toolbar link: pure
 * functions of their arguments, no widgets, no server calls.
 */

const TIME_UNITS: Array<[Intl.RelativeTimeFormatUnit, number]> = [
  ['year', 365 * 86400_000],
  ['month', 30 * 86400_000],
  ['day', 86400_000],
  ['hour', 3600_000],
  ['minute', 60_000],
  ['second', 1000]
];

/**
 * "5 minutes ago", "tomorrow", "in 7 days". (JupyterLab's Time.formatHuman
 * rounds future times up to the largest unit: a token expiring in a day
 * would read "next year".)
 */
export function relativeTime(date: Date, now: number = Date.now()): string {
  const formatter = new Intl.RelativeTimeFormat(document.documentElement.lang || 'en', {
    numeric: 'auto'
  });
  const delta = date.getTime() - now;
  // to the minute beyond a minute, so that "in 1 day" taken a second later stays a day
  const rounded = Math.abs(delta) < 60_000 ? delta : Math.round(delta / 60_000) * 60_000;
  for (const [unit, ms] of TIME_UNITS) {
    if (Math.abs(rounded) >= ms) {
      return formatter.format(Math.trunc(rounded / ms), unit);
    }
  }
  return formatter.format(0, 'second');
}

/** Only http(s) links from the ELN are followed. */
export function safeUrl(url: string | null | undefined): string | null {
  if (typeof url !== 'string') {
    return null;
  }
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function portsText(ports: number[] | null): string {
  return ports && ports.length > 0 ? ports.join(', ') : 'all allowed ports';
}
