import { describe, expect, it, vi } from 'vitest';
import { authFetch, createAuthStore, refusedToken, type TokenStorage } from './auth';

function memoryStorage(): TokenStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => void items.set(k, v),
    removeItem: (k) => void items.delete(k),
  };
}

describe('auth store', () => {
  it('sends no token until one is entered, then on HTTP and in connection_init', () => {
    const storage = memoryStorage();
    const store = createAuthStore(storage);
    expect(store.headers()).toEqual({});
    expect(store.connectionParams()).toEqual({});
    store.setToken('  shoal_abc_def  ');
    expect(store.headers()).toEqual({ authorization: 'Bearer shoal_abc_def' });
    expect(store.connectionParams()).toEqual({ authorization: 'Bearer shoal_abc_def' });
    expect(storage.items.get('shoal.token')).toBe('shoal_abc_def');
    // A new tab's store (same session storage) starts with it.
    expect(createAuthStore(storage).token()).toBe('shoal_abc_def');
  });

  it('asks for a token when the server refuses, and forgets the refused one', async () => {
    const storage = memoryStorage();
    const store = createAuthStore(storage);
    store.setToken('shoal_revoked');
    const seen: boolean[] = [];
    store.subscribe(() => seen.push(store.state().required));
    const base = vi.fn(async (_input: RequestInfo | URL, init?: RequestInit) => {
      const headers = new Headers(init?.headers);
      expect(headers.get('authorization')).toBe('Bearer shoal_revoked');
      expect(headers.get('content-type')).toBe('application/json');
      return new Response('{"detail":"revoked"}', { status: 401 });
    });
    const response = await authFetch(store, base as unknown as typeof fetch)('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    });
    expect(response.status).toBe(401);
    expect(store.state()).toEqual({ required: true, hasToken: false });
    expect(store.token()).toBeNull();
    expect(storage.items.has('shoal.token')).toBe(false);
    expect(seen).toEqual([true]);
    store.setToken('shoal_new');
    expect(store.state()).toEqual({ required: false, hasToken: true });
  });

  it('leaves a server without tokens alone', async () => {
    const store = createAuthStore(null);
    const base = vi.fn(async () => new Response('{}', { status: 200 }));
    await authFetch(store, base as unknown as typeof fetch)('/graphql');
    expect(store.state()).toEqual({ required: false, hasToken: false });
  });
});

describe('refused socket', () => {
  it('is told apart from other closes', () => {
    expect(refusedToken({ code: 4403 })).toBe(true);
    expect(refusedToken({ code: 1002, reason: 'the bearer token "x" has been revoked' })).toBe(true);
    expect(refusedToken({ code: 1002, reason: 'invalid message' })).toBe(false);
    expect(refusedToken({ code: 1006 })).toBe(false);
    expect(refusedToken(undefined)).toBe(false);
  });
});
