import { useSyncExternalStore } from 'react';

/** The subscription socket's state. */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting';

type Listener = () => void;

export function createConnectionStore(initial: ConnectionState = 'connecting') {
  let state = initial;
  /** Times the socket (re)connected: subscribers re-read after a reconnect. */
  let epoch = 0;
  const listeners = new Set<Listener>();
  return {
    get: () => state,
    epoch: () => epoch,
    set(next: ConnectionState) {
      if (next === state) return;
      // "closed" fires before the first connection too: it is not a reconnect then.
      if (next === 'reconnecting' && state === 'connecting' && epoch === 0) return;
      if (next === 'live') epoch++;
      state = next;
      listeners.forEach((l) => l());
    },
    subscribe(listener: Listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

export const connection = createConnectionStore();

export function useConnection(): ConnectionState {
  return useSyncExternalStore(connection.subscribe, connection.get, connection.get);
}

export function useConnectionEpoch(): number {
  return useSyncExternalStore(connection.subscribe, connection.epoch, connection.epoch);
}
