import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { act, cleanup, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { ApiError, type Collection, type Doc, type Page } from '../lib/api';
import type { LiveEvent, Match, SubscriptionHandlers } from '../lib/live';
import { api, live, useApp } from '../store';
import { CollectionView } from './CollectionView';

HTMLDialogElement.prototype.showModal = function showModal(this: HTMLDialogElement) {
  this.open = true;
};

const notes: Collection = {
  name: 'notes',
  schema: {
    type: 'object',
    required: ['title'],
    properties: {
      title: { type: 'string' },
      pinned: { type: 'boolean' },
      stars: { type: 'integer' },
      shared_with: { type: 'array', items: { type: 'string' } },
    },
  },
  access: { read: 'owner, field:shared_with', write: 'owner' },
};

/** The view's subscriptions, newest last, as a scripted broadcaster sees them. */
let subs: { channel: string; handlers: SubscriptionHandlers; filter: unknown; token: unknown }[] = [];
const current = () => subs.at(-1)!;
let seq = 100;
function deliver(event: LiveEvent, match?: Match) {
  act(() => current().handlers.onEvent?.(event, (seq += 1), match));
}
const rowTitles = () => screen.queryAllByRole('row').slice(1).map((tr) => within(tr).getAllByRole('cell')[1]?.textContent);

describe('CollectionView: a live query', () => {
  beforeEach(() => {
    subs = [];
    vi.spyOn(live, 'subscribe').mockImplementation((channel, handlers, options) => {
      subs.push({ channel, handlers, filter: options?.filter ?? null, token: options?.token ?? null });
    });
    vi.spyOn(live, 'unsubscribe').mockImplementation(() => {});
    vi.spyOn(live, 'isActive').mockReturnValue(true);
    act(() => useApp.setState({ username: 'ana', userId: 'u-ana', roles: [], meRoles: [] }));
  });
  afterEach(() => {
    cleanup();
    vi.restoreAllMocks();
    act(() => useApp.setState({ username: null, userId: null }));
  });

  it('filters list and subscription alike, applies enter/stay/leave by version, shows a refused filter', async () => {
    const list = vi.spyOn(api, 'list').mockImplementation(async (_name, options): Promise<Page<Doc>> => {
      const pinnedOnly = (options?.filter ?? []).some(([k, v]) => k === 'pinned' && v === 'true');
      const all: Doc[] = [
        { id: 'n1', title: 'Pinned one', pinned: true, created_by: 'u-ana' },
        { id: 'n2', title: 'Loose one', pinned: false, created_by: 'u-bob', shared_with: ['u-ana'] },
      ];
      const items = all.filter((d) => !pinnedOnly || d.pinned);
      return { items, next: null, versions: { n1: 3, n2: 1 } };
    });
    render(<CollectionView collection={notes} />);
    expect(current()).toMatchObject({ channel: 'notes', filter: null });
    expect(typeof current().token).toBe('function');
    act(() => current().handlers.onSubscribed?.({ seq: 100, fresh: true, recovered: null }));
    await screen.findByText('Loose one');
    expect(screen.getByText('shared with you')).toBeVisible();
    // Bob's note: only its author may change it.
    expect(screen.getByRole('button', { name: 'Edit Loose one' })).toBeDisabled();
    expect(screen.getByRole('button', { name: 'Edit Pinned one' })).toBeEnabled();

    // pinned = Yes: one typed filter for the subscription and the list.
    const user = userEvent.setup();
    await user.selectOptions(screen.getByLabelText('Filter'), 'pinned');
    await user.selectOptions(screen.getByLabelText('Value'), 'Yes');
    await user.click(screen.getByRole('button', { name: 'Apply' }));
    expect(current().filter).toEqual({ pinned: true });
    // Events that arrive before the list are held, then reconciled with its versions.
    deliver({ type: 'notes.updated', doc_id: 'n1', version: 2, data: { id: 'n1', title: 'Older', pinned: true } }, 'stay');
    act(() => current().handlers.onSubscribed?.({ seq: 110, fresh: true, recovered: null }));
    await vi.waitFor(() => expect(rowTitles()).toEqual(['Pinned one']));
    expect(list).toHaveBeenLastCalledWith('notes', expect.objectContaining({ filter: [['pinned', 'true']] }));
    expect(screen.getByText('pinned = Yes')).toBeVisible();

    deliver({ type: 'notes.updated', doc_id: 'n3', version: 4, data: { id: 'n3', title: 'Shared now', pinned: true } }, 'enter');
    deliver({ type: 'notes.updated', doc_id: 'n1', version: 4, data: { id: 'n1', title: 'Pinned, renamed', pinned: true } }, 'stay');
    expect(rowTitles()).toEqual(['Pinned, renamed', 'Shared now']);
    // Unshared (no data), then an older state of it: it stays gone.
    deliver({ type: 'notes.updated', doc_id: 'n3', version: 5, data: null }, 'leave');
    deliver({ type: 'notes.updated', doc_id: 'n3', version: 4, data: { id: 'n3', title: 'Shared now', pinned: true } }, 'enter');
    expect(rowTitles()).toEqual(['Pinned, renamed']);
    expect(screen.getByText(/1 document shown \(filtered\)/)).toBeVisible();

    // The broadcaster refuses a filter: said next to the controls, the chip marked.
    act(() => current().handlers.onError?.('bad_filter', "'pinned' is true or false", 'pinned'));
    expect(screen.getByRole('alert')).toHaveTextContent("The filter was refused: 'pinned' is true or false");
    expect(screen.getByText('pinned = Yes').closest('li')).toHaveClass('chip-invalid');
    // Removing the condition resubscribes without a filter.
    await user.click(screen.getByRole('button', { name: 'Remove filter pinned = Yes' }));
    expect(current().filter).toBeNull();
    expect(screen.getByRole('alert', { hidden: true })).not.toBeVisible();
  });

  it('checks a typed value before using it', async () => {
    vi.spyOn(api, 'list').mockResolvedValue({ items: [], next: null, versions: {} });
    render(<CollectionView collection={notes} />);
    const user = userEvent.setup();
    await user.selectOptions(screen.getByLabelText('Filter'), 'stars');
    await user.selectOptions(screen.getByLabelText('Comparison'), '≥');
    await user.click(screen.getByRole('button', { name: 'Apply' }));
    expect(screen.getByRole('alert')).toHaveTextContent('stars is a whole number');
    expect(current().filter).toBeNull();
    await user.type(screen.getByLabelText('Value'), '3');
    await user.click(screen.getByRole('button', { name: 'Apply' }));
    expect(current().filter).toEqual({ stars: { gte: 3 } });
    expect(screen.getByText('stars ≥ 3')).toBeVisible();
  });

  it('offers quick filters on a private collection: only mine, shared with me', async () => {
    vi.spyOn(api, 'list').mockResolvedValue({ items: [], next: null, versions: {} });
    render(<CollectionView collection={notes} />);
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Shared with me' }));
    expect(current().filter).toEqual({ shared_with: 'u-ana' });
    expect(screen.getByRole('button', { name: 'Shared with me' })).toHaveAttribute('aria-pressed', 'true');
    await user.click(screen.getByRole('button', { name: 'Shared with me' }));
    await user.click(screen.getByRole('button', { name: 'Only mine' }));
    expect(current().filter).toEqual({ created_by: 'u-ana' });
    expect(screen.getByText('only mine')).toBeVisible();
    expect(await screen.findByText('No notes match the filter.')).toBeVisible();
  });

  it('a 401 on the list is a sign-in state, not an error', async () => {
    vi.spyOn(api, 'list').mockRejectedValue(new ApiError(401, 'unauthorized', 'missing token'));
    render(<CollectionView collection={notes} />);
    expect(await screen.findByText('Sign in to see your notes.')).toBeVisible();
    expect(screen.getByText(/Your notes are private/)).toBeVisible();
    expect(screen.queryByText(/Could not load/)).toBeNull();
  });
});
