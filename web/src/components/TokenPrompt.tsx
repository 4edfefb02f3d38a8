import { useId, useState, type FormEvent } from 'react';
import { auth, useAuth } from '../lib/auth';

/**
 * Asks for an API token when the server requires one (docs/auth.md). The token stays in this
 * tab's session storage; the page reloads with it so every query and the live socket use it.
 */
export function TokenPrompt() {
  const { required } = useAuth();
  const [value, setValue] = useState('');
  const id = useId();
  if (!required) return null;
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!value.trim()) return;
    auth.setToken(value);
    window.location.reload();
  };
  return (
    <section className="token-prompt" role="dialog" aria-modal="false" aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>This Shoal requires an API token</h2>
      <p>
        Paste a token made with <code>shoal token create --name … --scope read,submit</code>. It is kept
        in this tab only. A token that was refused (revoked, or unknown) has been forgotten.
      </p>
      <form onSubmit={submit}>
        <label htmlFor={`${id}-token`}>API token</label>
        <input
          id={`${id}-token`}
          name="token"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          required
        />
        <button type="submit">Use this token</button>
      </form>
    </section>
  );
}
