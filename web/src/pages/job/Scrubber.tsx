import { useEffect, useRef, useState } from 'react';

/** Steps of the slider over the job's lifetime. */
export const SCRUBBER_STEPS = 1000;
/** How long the slider must rest before the page asks for the job as of that moment. */
export const SCRUB_SETTLE_MS = 150;

/** The job's lifetime: from its submission to its end (or now while it runs). */
export function lifetime(
  createdAt: string,
  completedAt: string | null | undefined,
  now: number,
): { start: number; end: number } {
  const start = Date.parse(createdAt);
  const end = completedAt ? Date.parse(completedAt) : now;
  return { start, end: Math.max(end, start + 1) };
}

/** The instant of slider step `step`, and the step of an instant. */
export function stepToTime(step: number, start: number, end: number): number {
  return Math.round(start + ((end - start) * step) / SCRUBBER_STEPS);
}
export function timeToStep(at: number, start: number, end: number): number {
  const step = Math.round(((at - start) / (end - start)) * SCRUBBER_STEPS);
  return Math.min(SCRUBBER_STEPS, Math.max(0, step));
}

function offset(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `+${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `+${m} min ${Math.round(s - m * 60)} s`;
}

/**
 * A slider over the job's lifetime that sets the instant the page shows the job as of
 * (`onChange(iso)`; `null` for live). At its right end the page is live again.
 */
export function Scrubber({
  createdAt,
  completedAt,
  now,
  asOf,
  busy,
  onChange,
}: {
  createdAt: string;
  completedAt: string | null | undefined;
  now: number;
  asOf: string | null;
  busy: boolean;
  onChange: (asOf: string | null) => void;
}) {
  const { start, end } = lifetime(createdAt, completedAt, now);
  const committed = asOf ? timeToStep(Date.parse(asOf), start, end) : SCRUBBER_STEPS;
  const [step, setStep] = useState(committed);
  const dragging = useRef(false);
  // Follow the address (back/forward, "Live") when the user is not dragging.
  useEffect(() => {
    if (!dragging.current) setStep(committed);
  }, [committed]);
  // Ask for the moment once the slider rests.
  useEffect(() => {
    if (step === committed) return;
    const t = setTimeout(() => {
      dragging.current = false;
      onChange(step >= SCRUBBER_STEPS ? null : new Date(stepToTime(step, start, end)).toISOString());
    }, SCRUB_SETTLE_MS);
    return () => clearTimeout(t);
  });

  const at = stepToTime(step, start, end);
  const live = step >= SCRUBBER_STEPS && !asOf;
  return (
    <div className="card scrubber" data-testid="scrubber" aria-busy={busy}>
      <label htmlFor="scrubber-range">
        {live ? (
          <strong>Live</strong>
        ) : (
          <>
            As of <time dateTime={new Date(at).toISOString()}>{new Date(at).toLocaleTimeString()}</time>
          </>
        )}{' '}
        <span className="small">
          ({offset(at - start)} after submission{busy ? ', loading…' : ''})
        </span>
      </label>
      <input
        id="scrubber-range"
        type="range"
        min={0}
        max={SCRUBBER_STEPS}
        value={step}
        aria-valuetext={live ? 'live' : new Date(at).toLocaleTimeString()}
        onChange={(e) => {
          dragging.current = true;
          setStep(Number(e.target.value));
        }}
      />
      <div className="scrubber-ends small">
        <span>Submitted {new Date(start).toLocaleTimeString()}</span>
        {asOf ? (
          <button type="button" className="btn secondary" onClick={() => onChange(null)}>
            Back to live
          </button>
        ) : null}
        <span>{completedAt ? `Ended ${new Date(end).toLocaleTimeString()}` : 'Now'}</span>
      </div>
    </div>
  );
}
