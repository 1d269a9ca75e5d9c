// Files in conversations, pure (tested in files.test.ts): the types and size media takes
// (the same rule as media's digital/attachments.rs, checked here first so an agent or a
// customer learns at once why a file cannot go), and how a size is shown. Shared by the
// agent's chat pane and the web chat widget.

/** The largest file media takes: 5 MiB. */
export const MAX_FILE_BYTES = 5 * 1024 * 1024;

/** The media types media takes. */
export const ALLOWED_TYPES = [
  "image/jpeg",
  "image/png",
  "image/gif",
  "image/webp",
  "application/pdf",
  "text/plain",
  "audio/mpeg",
  "audio/ogg",
  "video/mp4",
] as const;

/** Why a file cannot be sent, or undefined when it can. */
export type FileRefusal = "empty" | "tooLarge" | "type" | "name";

export function checkFile(name: string, type: string, size: number): FileRefusal | undefined {
  const essence = type.split(";")[0].trim().toLowerCase();
  if (!(ALLOWED_TYPES as readonly string[]).includes(essence)) return "type";
  if (size <= 0) return "empty";
  if (size > MAX_FILE_BYTES) return "tooLarge";
  // eslint-disable-next-line no-control-regex
  if (!name.trim() || new TextEncoder().encode(name).length > 200 || name.startsWith(".") || /[/\\\u0000-\u001f\u007f]/.test(name)) return "name";
  return undefined;
}

/** A size as people read it: 980 B, 12.5 KB, 3.1 MB. */
export function fileSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The file's type for the `accept` attribute of a file input. */
export const ACCEPT = ALLOWED_TYPES.join(",");
