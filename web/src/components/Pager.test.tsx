import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { Pager } from './Pager';

afterEach(cleanup);

const button = (name: string) => screen.getByRole('button', { name }) as HTMLButtonElement;

describe('Pager', () => {
  it('on the first page: only Next, which appends the end cursor', () => {
    const onChange = vi.fn();
    render(
      <Pager
        label="Pages of jobs"
        cursors={[]}
        pageInfo={{ hasNextPage: true, endCursor: 'c1' }}
        onChange={onChange}
        withFirst
      >
        Page 1
      </Pager>,
    );
    expect(screen.getByRole('navigation', { name: 'Pages of jobs' }).textContent).toContain(
      'Page 1',
    );
    expect(button('First').disabled).toBe(true);
    expect(button('Previous').disabled).toBe(true);
    fireEvent.click(button('Next'));
    expect(onChange).toHaveBeenCalledWith(['c1']);
  });

  it('further on: Previous drops the last cursor, First drops them all', () => {
    const onChange = vi.fn();
    render(
      <Pager
        label="Pages of jobs"
        cursors={['c1', 'c2']}
        pageInfo={{ hasNextPage: true, endCursor: 'c3' }}
        onChange={onChange}
        withFirst
      >
        Page 3
      </Pager>,
    );
    fireEvent.click(button('Previous'));
    expect(onChange).toHaveBeenLastCalledWith(['c1']);
    fireEvent.click(button('First'));
    expect(onChange).toHaveBeenLastCalledWith([]);
    fireEvent.click(button('Next'));
    expect(onChange).toHaveBeenLastCalledWith(['c1', 'c2', 'c3']);
  });

  it('on the last page, or while loading, Next is disabled; First only when asked for', () => {
    const { rerender } = render(
      <Pager
        label="Pages of tasks"
        cursors={['c1']}
        pageInfo={{ hasNextPage: false, endCursor: 'c2' }}
        onChange={() => {}}
      >
        Tasks 51–60
      </Pager>,
    );
    expect(button('Next').disabled).toBe(true);
    expect(button('Previous').disabled).toBe(false);
    expect(screen.queryByRole('button', { name: 'First' })).toBeNull();
    rerender(
      <Pager label="Pages of tasks" cursors={['c1']} pageInfo={undefined} onChange={() => {}}>
        Tasks 51–50
      </Pager>,
    );
    expect(button('Next').disabled).toBe(true);
  });
});
