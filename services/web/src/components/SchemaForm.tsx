// The controls of a schema form: one labelled control per field (a list of texts, one per line,
// for arrays of strings), required marks, hints, the read-only fields displayed (never editable
// nor sent), and errors linked to their field.

import { useId } from 'react';
import type { Json } from '../lib/api';
import { describeRules, type Field } from '../lib/schema';

interface Props {
  fields: Field[];
  raw: Record<string, string>;
  onChange: (name: string, value: string) => void;
  errors: Record<string, string>;
  /** The stored document (for read-only fields); null when creating. */
  doc: Record<string, Json> | null;
}

export function SchemaFields({ fields, raw, onChange, errors, doc }: Props) {
  const prefix = useId();
  const shown = fields.filter((f) => !(f.readOnly && doc === null));
  if (fields.length === 0) return <p className="muted">This collection’s schema declares no fields.</p>;
  return (
    <div className="schema-form">
      {shown.map((field) => {
        const id = `${prefix}-${field.name}`;
        const hint = [field.schema.description, describeRules(field.schema)].filter(Boolean).join(' — ');
        const describedBy = `${hint ? `${id}-hint` : ''} ${id}-error`.trim();
        const error = errors[field.name];
        const value = doc?.[field.name];
        const common = {
          id,
          name: field.name,
          'aria-describedby': describedBy,
          'aria-required': field.required ? true : undefined,
          'aria-invalid': error ? true : undefined,
          value: raw[field.name] ?? '',
          onChange: (e: { target: { value: string } }) => onChange(field.name, e.target.value),
        } as const;
        let control;
        if (field.readOnly) {
          control =
            field.kind === 'json' ? (
              <pre id={id} className="readonly-json" tabIndex={0} aria-describedby={describedBy}>
                {value === undefined ? 'Not set yet.' : JSON.stringify(value, null, 2)}
              </pre>
            ) : (
              <input id={id} name={field.name} readOnly value={value === undefined || value === null ? '' : String(value)} aria-describedby={describedBy} />
            );
        } else if (field.kind === 'enum') {
          control = (
            <select {...common}>
              <option value="">{field.required ? 'Choose…' : '— not set —'}</option>
              {(field.schema.enum ?? []).map((option, index) => (
                <option key={index} value={String(index)}>
                  {String(option)}
                </option>
              ))}
            </select>
          );
        } else if (field.kind === 'boolean') {
          control = (
            <select {...common}>
              <option value="">{field.required ? 'Choose…' : '— not set —'}</option>
              <option value="true">Yes</option>
              <option value="false">No</option>
            </select>
          );
        } else if (field.kind === 'integer' || field.kind === 'number') {
          control = <input {...common} type="number" step={field.kind === 'integer' ? '1' : 'any'} inputMode={field.kind === 'integer' ? 'numeric' : 'decimal'} />;
        } else if (field.kind === 'list') {
          control = <textarea {...common} rows={3} spellCheck={false} autoComplete="off" className="list-input" placeholder="one per line" />;
        } else if (field.kind === 'json') {
          control = <textarea {...common} rows={4} spellCheck={false} className="json-input" />;
        } else {
          const type = ({ email: 'email', uri: 'url', date: 'date' } as Record<string, string>)[field.schema.format ?? ''] ?? 'text';
          control = <input {...common} type={type} maxLength={field.schema.maxLength} autoComplete="off" />;
        }
        return (
          <div key={field.name} className={`field field-${field.kind}`} data-field={field.name}>
            <label htmlFor={id}>
              {field.name}
              {field.required && (
                <>
                  <span className="required" aria-hidden="true" title="required">
                    {' *'}
                  </span>
                  <span className="sr-only"> (required)</span>
                </>
              )}
              {field.readOnly && <span className="badge badge-muted">read-only</span>}
            </label>
            {control}
            <FieldNotes id={id} hint={hint} error={error} />
          </div>
        );
      })}
    </div>
  );
}

/** A field's hint and its error line (`<id>-hint`, `<id>-error`, for aria-describedby). */
export function FieldNotes({ id, hint, error }: { id: string; hint?: string | undefined; error?: string | undefined }) {
  return (
    <>
      {hint && (
        <p className="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      <p className="field-error" id={`${id}-error`} hidden={!error}>
        {error}
      </p>
    </>
  );
}
