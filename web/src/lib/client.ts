import { Client, cacheExchange, fetchExchange, subscriptionExchange } from 'urql';
import { createClient as createWsClient } from 'graphql-ws';
import { connection } from './connection';

/**
 * Paths tried for the subscriptions' WebSocket (graphql-ws protocol), in turn until one
 * connects; then that one is kept. `VITE_GRAPHQL_WS_PATH` at build time fixes it.
 */
export const WS_PATHS: string[] = import.meta.env.VITE_GRAPHQL_WS_PATH
  ? [import.meta.env.VITE_GRAPHQL_WS_PATH as string]
  : ['/graphql', '/graphql/ws'];

export function wsUrl(path: string, location: Pick<Location, 'protocol' | 'host'>): string {
  if (/^wss?:\/\//.test(path)) return path;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

let attempt = 0;
let found: string | null = null;

export const wsClient = createWsClient({
  url: () => wsUrl(found ?? WS_PATHS[attempt++ % WS_PATHS.length], window.location),
  lazy: false,
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
    connected: (socket) => {
      if (!found) {
        const url = (socket as WebSocket).url;
        found = WS_PATHS.find((p) => url.endsWith(p)) ?? null;
      }
      connection.set('live');
    },
    closed: () => connection.set('reconnecting'),
    error: () => connection.set('reconnecting'),
  },
});

export const client = new Client({
  url: '/graphql',
  // GET /graphql is GraphiQL (and the WebSocket upgrade) on shoal: send every operation as POST.
  preferGetMethod: false,
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
