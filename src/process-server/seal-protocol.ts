/** Messages between the uploader and its seal workers (seal-worker.ts). */
export interface SealRequest {
  readonly taskId: number;
  /** The spool file: one SEGMENT frame as received. */
  readonly path: string;
  readonly disk: string;
  readonly generation: number;
  readonly sequence: number;
  readonly storeId: string;
  readonly encKey: Uint8Array;
}

export type SealResponse =
  | { readonly type: 'sealed'; readonly taskId: number; readonly sealed: ArrayBuffer }
  | { readonly type: 'error'; readonly taskId: number; readonly message: string; readonly code?: string };
