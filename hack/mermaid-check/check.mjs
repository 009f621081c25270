// Parses Mermaid diagrams with Mermaid's own parser, without a browser: Mermaid needs a DOM only
// for its sanitizer, which jsdom provides. Input on stdin: a JSON array of {"id", "text"}; output
// on stdout: a JSON array of {"id", "ok", "type", "error"}. Rendering (layout, fonts) is not
// checked: a diagram that parses is one the forge draws.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
globalThis.Element = dom.window.Element;

const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let input = '';
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const { id, text } of JSON.parse(input)) {
  try {
    const r = await mermaid.parse(text);
    out.push({ id, ok: true, type: r.diagramType });
  } catch (e) {
    out.push({ id, ok: false, error: String(e?.message ?? e).split('\n').slice(0, 4).join(' | ') });
  }
}
process.stdout.write(JSON.stringify(out) + '\n');
