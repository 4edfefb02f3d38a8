import { useState } from 'react';

/** Characters of JSON shown before "Show all". */
export const JSON_PREVIEW_CHARS = 4_000;

/** Pretty JSON, truncated when large (with a way to see all of it), and a Copy button. */
export function JsonBlock({ value, label }: { value: unknown; label: string }) {
  const text = JSON.stringify(value ?? null, null, 2);
  const [all, setAll] = useState(false);
  const [copied, setCopied] = useState<'yes' | 'no' | null>(null);
  const long = text.length > JSON_PREVIEW_CHARS;
  const shown = long && !all ? `${text.slice(0, JSON_PREVIEW_CHARS)}\n…` : text;
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied('yes');
    } catch {
      setCopied('no');
    }
  };
  return (
    <div className="json-block">
      <div className="json-actions">
        <button type="button" className="btn secondary" onClick={copy}>
          Copy {label.toLowerCase()}
        </button>
        {long && (
          <button type="button" className="btn secondary" onClick={() => setAll(!all)}>
            {all ? 'Show less' : `Show all (${(text.length / 1024).toFixed(1)} KB)`}
          </button>
        )}
        <span className="small" role="status">
          {copied === 'yes' ? 'Copied.' : copied === 'no' ? 'Could not copy: select the text instead.' : ''}
        </span>
      </div>
      {/* Scrollable regions are focusable, so the keyboard can scroll them. */}
      <pre className="mono json" tabIndex={0} aria-label={`${label} (JSON)`} data-testid={`json-${label.toLowerCase()}`}>
        {shown}
      </pre>
      {long && !all && (
        <p className="small">
          Showing the first {JSON_PREVIEW_CHARS.toLocaleString()} of {text.length.toLocaleString()} characters.
        </p>
      )}
    </div>
  );
}
