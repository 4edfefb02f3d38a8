import { useEffect, useRef } from 'react';

/**
 * A throttle with a trailing call. `call(run, gapMs)` runs `run` at once when `gapMs` has passed
 * since the last run and nothing is `busy`; otherwise once when the wait is over (a full gap if
 * it is over but something is busy), however many calls came meanwhile, so the last of a burst
 * is never dropped. `mark()` records a run made elsewhere (a read the caller started itself).
 */
export function useTrailingThrottle() {
  const last = useRef(0);
  const trailing = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(
    () => () => {
      if (trailing.current) clearTimeout(trailing.current);
    },
    [],
  );
  const mark = () => {
    last.current = Date.now();
  };
  const call = (run: () => void, gapMs: number, busy = false) => {
    const now = () => {
      trailing.current = null;
      mark();
      run();
    };
    const wait = gapMs - (Date.now() - last.current);
    if (wait <= 0 && !busy) {
      now();
    } else if (!trailing.current) {
      trailing.current = setTimeout(now, wait > 0 ? wait : gapMs);
    }
  };
  return { call, mark };
}
