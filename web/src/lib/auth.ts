import { useSyncExternalStore } from 'react';

/**
 * The API token of this tab (docs/auth.md). A Shoal that runs with `--auth tokens` answers 401
 * without one (or closes the subscription socket with 4403); the dashboard then asks for a token,
 * keeps it in `sessionStorage` (gone when the tab closes, never in `localStorage` or a cookie),
 * sends it as `Authorization: Bearer …` on every request and in `connection_init`, and asks
 * again when it is refused (revoked).
 */

const KEY = 'shoal.token';

type Listener = () => void;

export interface TokenStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface AuthState {
  /** The server refused a request for want of a (valid) token. */
  required: boolean;
  /** A token was entered (it may still be refused). */
  hasToken: boolean;
}

export function createAuthStore(storage: TokenStorage | null) {
  let token: string | null = storage?.getItem(KEY) ?? null;
  let state: AuthState = { required: false, hasToken: token !== null };
  const listeners = new Set<Listener>();
  const emit = (next: AuthState) => {
    if (next.required === state.required && next.hasToken === state.hasToken) return;
    state = next;
    listeners.forEach((l) => l());
  };
  return {
    token: () => token,
    state: () => state,
    /** Stores the token the user entered and clears the prompt. */
    setToken(value: string) {
      token = value.trim() || null;
      if (token) storage?.setItem(KEY, token);
      else storage?.removeItem(KEY);
      emit({ required: false, hasToken: token !== null });
    },
    /** The server refused: forget the token (if any) and ask for one. */
    refused() {
      token = null;
      storage?.removeItem(KEY);
      emit({ required: true, hasToken: false });
    },
    /** Headers for an HTTP request. */
    headers(): Record<string, string> {
      return token ? { authorization: `Bearer ${token}` } : {};
    },
    /** The `connection_init` payload of the subscription socket. */
    connectionParams(): Record<string, string> {
      return token ? { authorization: `Bearer ${token}` } : {};
    },
    subscribe(listener: Listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
}

function sessionStorageOrNull(): TokenStorage | null {
  try {
    return typeof window !== 'undefined' ? window.sessionStorage : null;
  } catch {
    return null;
  }
}

export const auth = createAuthStore(sessionStorageOrNull());

/**
 * Whether the subscription socket closed because its token was refused: 4403 (Forbidden, the
 * graphql-transport-ws code), or 1002 with a reason about the token (how Shoal's server closes a
 * refused `connection_init`).
 */
export function refusedToken(event: { code?: number; reason?: string } | undefined): boolean {
  if (!event) return false;
  return event.code === 4403 || (event.code === 1002 && /token/i.test(event.reason ?? ''));
}

/** `fetch` that sends the token and reports a 401 to the store. */
export function authFetch(store: ReturnType<typeof createAuthStore>, base: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const headers = new Headers(init?.headers);
    for (const [name, value] of Object.entries(store.headers())) headers.set(name, value);
    const response = await base(input, { ...init, headers });
    if (response.status === 401) store.refused();
    return response;
  };
}

export function useAuth(): AuthState {
  return useSyncExternalStore(auth.subscribe, auth.state, auth.state);
}
