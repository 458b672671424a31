// A native modal <dialog> (focus trapped, Esc closes): opened on mount, `onClose` on close.

import { useEffect, useId, useRef, type ReactNode } from 'react';

export function Dialog({ title, onClose, narrow = false, children }: { title: string; onClose: () => void; narrow?: boolean; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const closeRef = useRef(onClose);
  useEffect(() => {
    closeRef.current = onClose;
  });
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (!dialog.open) dialog.showModal?.();
    const closed = () => closeRef.current();
    dialog.addEventListener('close', closed);
    return () => dialog.removeEventListener('close', closed);
  }, []);
  return (
    <dialog ref={ref} className={narrow ? 'panel panel-narrow' : 'panel'} aria-labelledby={titleId}>
      <div className="dialog-head">
        <h2 id={titleId}>{title}</h2>
        <button type="button" className="icon" aria-label="Close" onClick={() => onClose()}>
          ×
        </button>
      </div>
      {children}
    </dialog>
  );
}
