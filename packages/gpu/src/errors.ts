import { NattenError } from '@natten-web/core';

/** Device lost, or an error scope caught a validation / out-of-memory error. */
export class NattenDeviceError extends NattenError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'device', options);
    this.name = 'NattenDeviceError';
  }
}

/** A generated shader failed to compile; carries the kernel key, the compiler messages and the source. */
export class NattenShaderError extends NattenError {
  readonly key: string;
  readonly messages: readonly string[];
  readonly source: string;
  constructor(key: string, messages: readonly string[], source: string, options?: { cause?: unknown }) {
    super(`shader ${key} failed to compile:\n${messages.join('\n')}`, 'shader', options);
    this.name = 'NattenShaderError';
    this.key = key;
    this.messages = messages;
    this.source = source;
  }
}
