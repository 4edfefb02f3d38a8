import { useEffect, useRef } from 'react';
import { useSubscription, type AnyVariables, type TypedDocumentNode } from 'urql';
import { useConnection, useConnectionEpoch } from './connection';

/** How often a page re-reads while the socket is down (a fallback, not the normal path). */
export const FALLBACK_POLL_MS = 3_000;
/** Least time between two re-reads triggered by subscription messages. */
export const MIN_REFRESH_MS = 250;

/**
 * Keeps a page live: calls `refresh` when `subscription` sends a message (at most every
 * MIN_REFRESH_MS), after every reconnect (messages may have been missed), and every
 * FALLBACK_POLL_MS while the socket is not connected or the subscription failed.
 */
export function useLiveRefresh<Data, Variables extends AnyVariables>(
  subscription: TypedDocumentNode<Data, Variables>,
  variables: Variables,
  refresh: () => void,
  pause = false,
) {
  const state = useConnection();
  const epoch = useConnectionEpoch();
  const refreshRef = useRef(refresh);
  useEffect(() => {
    refreshRef.current = refresh;
  });

  const [result] = useSubscription<Data, Data, Variables>({
    query: subscription,
    variables,
    pause,
  });
  const failed = Boolean(result.error);
  useEffect(() => {
    if (result.error) console.warn(`subscription failed, polling instead: ${result.error.message}`);
  }, [result.error]);

  const last = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    if (!result.data) return;
    const since = Date.now() - last.current;
    if (timer.current) return;
    timer.current = setTimeout(
      () => {
        timer.current = null;
        last.current = Date.now();
        refreshRef.current();
      },
      Math.max(0, MIN_REFRESH_MS - since),
    );
  }, [result.data]);
  useEffect(
    () => () => {
      if (timer.current) clearTimeout(timer.current);
    },
    [],
  );

  // Re-read after a reconnect.
  useEffect(() => {
    if (epoch > 1) refreshRef.current();
  }, [epoch]);

  // Poll while not live.
  useEffect(() => {
    if (pause || (state === 'live' && !failed)) return;
    const id = setInterval(() => refreshRef.current(), FALLBACK_POLL_MS);
    return () => clearInterval(id);
  }, [state, failed, pause]);

  return { data: result.data, error: result.error };
}
