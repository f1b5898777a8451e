import { BlobServiceClient, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob';
import { LifeboatError } from '../../core/errors.js';
import { checkRange, checkSize, redactUrl } from '../range.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type PutOptions,
  type Storage,
  type StorageCapabilities,
} from '../storage.js';
import { azureStatus, mapAzureError } from './azure-errors.js';

export interface AzureBlobOptions {
  /** Read for AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT/KEY, LIFEBOAT_AZURE_ENDPOINT. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Wins over the environment's connection string and key. */
  readonly connectionString?: string;
  readonly accountKey?: string;
  /** Blob service endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1 for Azurite. */
  readonly endpoint?: string;
  /** Create the container when it is missing (default true). */
  readonly createContainer?: boolean;
}

/** A single Put Blob takes at most 5000 MiB; larger objects would need block lists. */
const MAX_PUT_BLOB_BYTES = 5000 * 1024 * 1024;
const LIST_PAGE_SIZE = 5000;

/**
 * A store in an Azure Blob container, opened from `azblob://ACCOUNT/CONTAINER/prefix`.
 * Objects are block blobs written with one Put Blob each, which the service makes
 * atomic; create-only puts send If-None-Match: * and the service enforces it. The
 * SDK's own retries are off: retry is the registry's wrapper's job.
 */
export class AzureBlobStorage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities = { conditionalCreate: true, maxObjectSizeBytes: MAX_PUT_BLOB_BYTES };

  private constructor(
    url: URL,
    private readonly container: ContainerClient,
    /** '' or a '/'-terminated key path every key is stored under. */
    private readonly base: string,
  ) {
    this.url = redactUrl(url);
  }

  static async open(url: string | URL, options: AzureBlobOptions = {}): Promise<AzureBlobStorage> {
    const parsed = typeof url === 'string' ? new URL(url) : url;
    const { account, containerName, base } = parseAzureUrl(parsed);
    const service = serviceClient(account, options);
    const container = service.getContainerClient(containerName);
    try {
      if (options.createContainer ?? true) await container.createIfNotExists();
      else if (!(await container.exists())) {
        throw new LifeboatError('CONFIG_INVALID', 'azure container does not exist', { details: { account, container: containerName } });
      }
    } catch (err) {
      throw mapAzureError(err, 'open', containerName);
    }
    return new AzureBlobStorage(parsed, container, base);
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    checkKey(key);
    checkSize(key, data.length, this.capabilities.maxObjectSizeBytes);
    const createOnly = options.ifNoneMatch === true;
    try {
      await this.container.getBlockBlobClient(this.base + key).upload(data, data.length, {
        conditions: createOnly ? { ifNoneMatch: '*' } : undefined,
      });
    } catch (err) {
      throw mapAzureError(err, 'put', key, createOnly);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkKey(key);
    if (range) checkRange(range);
    if (range?.length === 0) {
      // HTTP has no empty range; the contract still wants NOT_FOUND for an absent key.
      if (!(await this.stat(key))) throw new LifeboatError('NOT_FOUND', `object ${key} not found`, { details: { key } });
      return Buffer.alloc(0);
    }
    try {
      const response = await this.container.getBlobClient(this.base + key).download(range?.offset ?? 0, range?.length);
      const body = await readAll(response.readableStreamBody);
      if (response.contentLength !== undefined && body.length !== response.contentLength) {
        throw new LifeboatError('STORAGE_UNAVAILABLE', 'azure download ended early', {
          details: { key, expected: response.contentLength, received: body.length },
        });
      }
      return body;
    } catch (err) {
      // 416: the range starts at or past the end of an object that exists.
      if (range && azureStatus(err) === 416) return Buffer.alloc(0);
      throw mapAzureError(err, 'get', key);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const props = await this.container.getBlobClient(this.base + key).getProperties();
      return { key, sizeBytes: props.contentLength ?? 0, modifiedAt: props.lastModified ?? new Date(0) };
    } catch (err) {
      if (azureStatus(err) === 404) return undefined;
      throw mapAzureError(err, 'stat', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let last = '';
    try {
      const pages = this.container.listBlobsFlat({ prefix: this.base + prefix }).byPage({ maxPageSize: LIST_PAGE_SIZE });
      for await (const page of pages) {
        for (const item of page.segment.blobItems) {
          const key = item.name.slice(this.base.length);
          if (!isKey(key)) continue; // a blob another tool wrote: not in our key space
          if (key <= last) throw new LifeboatError('STORAGE_UNAVAILABLE', 'azure listing out of order', { details: { key, last } });
          last = key;
          yield { key, sizeBytes: item.properties.contentLength ?? 0, modifiedAt: item.properties.lastModified };
        }
      }
    } catch (err) {
      throw mapAzureError(err, 'list', prefix);
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await this.container.getBlobClient(this.base + key).deleteIfExists({ deleteSnapshots: 'include' });
    } catch (err) {
      throw mapAzureError(err, 'delete', key);
    }
  }

  async close(): Promise<void> {}
}

function isKey(key: string): boolean {
  try {
    checkKey(key);
    return true;
  } catch {
    return false;
  }
}

function parseAzureUrl(url: URL): { account: string; containerName: string; base: string } {
  const [containerName = '', ...rest] = decodeURIComponent(url.pathname).split('/').filter((s) => s !== '');
  if (url.protocol !== 'azblob:' || url.hostname === '' || containerName === '') {
    throw new LifeboatError('CONFIG_INVALID', 'azure storage URL must be azblob://ACCOUNT/CONTAINER[/prefix]', {
      details: { url: redactUrl(url) },
    });
  }
  const base = rest.length > 0 ? `${rest.join('/')}/` : '';
  if (base !== '') checkKey(base.slice(0, -1));
  return { account: url.hostname, containerName, base };
}

function serviceClient(account: string, options: AzureBlobOptions): BlobServiceClient {
  const env = options.env ?? process.env;
  const pipeline = { retryOptions: { maxTries: 1 } };
  const connectionString = options.connectionString ?? env.AZURE_STORAGE_CONNECTION_STRING;
  if (connectionString) {
    const client = BlobServiceClient.fromConnectionString(connectionString, pipeline);
    if (client.accountName !== account) {
      throw new LifeboatError('CONFIG_INVALID', 'azure connection string names another account than the URL', {
        details: { urlAccount: account, connectionStringAccount: client.accountName },
      });
    }
    return client;
  }
  const envAccount = env.AZURE_STORAGE_ACCOUNT;
  if (envAccount !== undefined && envAccount !== '' && envAccount !== account) {
    throw new LifeboatError('CONFIG_INVALID', 'AZURE_STORAGE_ACCOUNT names another account than the URL', {
      details: { urlAccount: account, envAccount },
    });
  }
  const key = options.accountKey ?? env.AZURE_STORAGE_KEY;
  if (!key) {
    throw new LifeboatError('CONFIG_INVALID', 'no azure credentials', {
      details: { account, need: 'AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY' },
    });
  }
  const endpoint = options.endpoint ?? env.LIFEBOAT_AZURE_ENDPOINT ?? `https://${account}.blob.core.windows.net`;
  return new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key), pipeline);
}

async function readAll(stream: NodeJS.ReadableStream | undefined): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}
