import { afterEach, describe, expect, it, vi } from 'vitest';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { ApiError } from '../lib/api';
import { fieldsOf } from '../lib/schema';
import { api } from '../store';
import { CreateDialog } from './DocDialogs';

// jsdom has no modal dialogs.
HTMLDialogElement.prototype.showModal = function showModal(this: HTMLDialogElement) {
  this.open = true;
};

const fields = fieldsOf({
  type: 'object',
  required: ['nombre'],
  properties: { nombre: { type: 'string' }, precio: { type: 'number', minimum: 0 }, talla: { type: 'string' } },
});

describe('CreateDialog', () => {
  afterEach(() => vi.restoreAllMocks());

  it('shows a 422 next to each failing field, then creates once fixed', async () => {
    const create = vi
      .spyOn(api, 'create')
      .mockRejectedValueOnce(
        new ApiError(422, 'validation', 'invalid', [
          { field: 'nombre', reason: 'is required' },
          { field: 'precio', reason: '-5 is less than the minimum of 0' },
        ]),
      )
      .mockResolvedValueOnce({ doc: { id: 'a1', nombre: 'X', precio: 5 }, etag: '"1"' });
    const created = vi.fn();
    const closed = vi.fn();
    render(<CreateDialog name="products" fields={fields} onClose={closed} onCreated={created} />);
    const user = userEvent.setup();
    await user.type(screen.getByLabelText(/precio/), '-5');
    await user.click(screen.getByRole('button', { name: 'Create' }));
    expect(await screen.findByText('-5 is less than the minimum of 0')).toBeVisible();
    expect(screen.getByText('nombre is required')).toBeVisible();
    expect(screen.getByLabelText(/precio/)).toHaveAttribute('aria-invalid', 'true');
    expect(screen.getByLabelText(/talla/)).not.toHaveAttribute('aria-invalid');
    expect(create).toHaveBeenCalledWith('products', { precio: -5 });

    await user.type(screen.getByLabelText(/nombre/), 'X');
    await user.clear(screen.getByLabelText(/precio/));
    await user.type(screen.getByLabelText(/precio/), '5');
    await user.click(screen.getByRole('button', { name: 'Create' }));
    await vi.waitFor(() => expect(created).toHaveBeenCalledWith({ id: 'a1', nombre: 'X', precio: 5 }, '"1"'));
    expect(closed).toHaveBeenCalled();
  });
});
