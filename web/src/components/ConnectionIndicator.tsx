import { useConnection } from '../lib/connection';

const LABELS = {
  live: 'Live',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
} as const;

export function ConnectionIndicator() {
  const state = useConnection();
  return (
    <div
      className={`conn conn-${state}`}
      role="status"
      aria-live="polite"
      data-testid="connection"
      data-state={state}
      title={
        state === 'live'
          ? 'Updates are pushed live'
          : 'Not connected: retrying, pages refresh every few seconds meanwhile'
      }
    >
      <span className="dot" aria-hidden="true" />
      {LABELS[state]}
    </div>
  );
}
