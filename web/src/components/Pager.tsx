import type { ReactNode } from 'react';

/** What a connection says about the page after the one shown. */
export interface PageInfoLike {
  hasNextPage: boolean;
  endCursor?: string | null;
}

/**
 * Previous / Next (and optionally First) for a cursor-paginated list whose position is the list
 * of `after` cursors of the pages before it (kept in the address): Next appends the shown
 * page's end cursor, Previous drops the last one, First drops them all.
 */
export function Pager({
  label,
  cursors,
  pageInfo,
  onChange,
  withFirst = false,
  children,
}: {
  /** The navigation landmark's name, e.g. "Pages of jobs". */
  label: string;
  cursors: string[];
  /** The shown page's; undefined while it loads (Next is disabled). */
  pageInfo: PageInfoLike | undefined;
  onChange: (cursors: string[]) => void;
  withFirst?: boolean;
  /** Where the list is, between the buttons: "Page 3", "Tasks 51–100". */
  children: ReactNode;
}) {
  const endCursor = pageInfo?.hasNextPage ? pageInfo.endCursor : null;
  const onFirstPage = cursors.length === 0;
  return (
    <nav className="pager" aria-label={label}>
      {withFirst && (
        <button
          type="button"
          className="btn secondary"
          disabled={onFirstPage}
          onClick={() => onChange([])}
        >
          First
        </button>
      )}
      <button
        type="button"
        className="btn secondary"
        disabled={onFirstPage}
        onClick={() => onChange(cursors.slice(0, -1))}
      >
        Previous
      </button>
      <span>{children}</span>
      <button
        type="button"
        className="btn secondary"
        disabled={!endCursor}
        onClick={() => endCursor && onChange([...cursors, endCursor])}
      >
        Next
      </button>
    </nav>
  );
}
