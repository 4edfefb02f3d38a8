import { Client, cacheExchange, fetchExchange, subscriptionExchange } from 'urql';
import { createClient as createWsClient } from 'graphql-ws';
import { connection } from './connection';
import { auth, authFetch, refusedToken } from './auth';

/**
 * The subscriptions' WebSocket (graphql-transport-ws): shoal serves it on `/graphql`, next to the
 * HTTP endpoint. `VITE_GRAPHQL_WS_PATH` at build time sets another path (or a full `ws://…` URL).
 */
export const WS_PATH: string = import.meta.env.VITE_GRAPHQL_WS_PATH || '/graphql';

export function wsUrl(path: string, location: Pick<Location, 'protocol' | 'host'>): string {
  if (/^wss?:\/\//.test(path)) return path;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

export const wsClient = createWsClient({
  url: () => wsUrl(WS_PATH, window.location),
  lazy: false,
  // The API token, if the server requires one (docs/auth.md); read at every (re)connection.
  connectionParams: () => auth.connectionParams(),
  keepAlive: 10_000,
  retryAttempts: Number.POSITIVE_INFINITY,
  shouldRetry: () => true,
  // 0.5 s, 1 s, 2 s, ... at most 10 s, with jitter.
  retryWait: async (retries) => {
    const wait = Math.min(10_000, 500 * 2 ** retries) + Math.random() * 300;
    await new Promise((resolve) => setTimeout(resolve, wait));
  },
  on: {
    connecting: () => connection.set('connecting'),
    connected: () => connection.set('live'),
    closed: (event) => {
      // A refused token: ask for another (the socket keeps retrying with whatever is entered).
      if (refusedToken(event as CloseEvent | undefined)) auth.refused();
      connection.set('reconnecting');
    },
    error: () => connection.set('reconnecting'),
  },
});

export const client = new Client({
  url: '/graphql',
  // GET /graphql is GraphiQL (and the WebSocket upgrade) on shoal: send every operation as POST.
  preferGetMethod: false,
  // Sends the API token and asks for one on a 401.
  fetch: authFetch(auth, (input, init) => fetch(input, init)),
  exchanges: [
    cacheExchange,
    fetchExchange,
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || '' };
        return {
          subscribe(sink) {
            const unsubscribe = wsClient.subscribe(input, sink);
            return { unsubscribe };
          },
        };
      },
    }),
  ],
});
