// SSEParser turns the text of a text/event-stream, in chunks cut anywhere,
// into events {event, data, id} as the HTML standard parses them.
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.afterCR = false;
    this.lastId = '';
    this.event = '';
    this.data = [];
  }

  push(text) {
    if (text === '') return;
    // A CR ending the last chunk ended a line; an LF starting this one
    // is the rest of that CRLF.
    if (this.afterCR && text[0] === '\n') text = text.slice(1);
    this.afterCR = false;
    this.buf += text;
    for (;;) {
      const i = this.buf.search(/[\r\n]/);
      if (i < 0) return;
      const line = this.buf.slice(0, i);
      let end = i + 1;
      if (this.buf[i] === '\r') {
        if (end === this.buf.length) this.afterCR = true;
        else if (this.buf[end] === '\n') end++;
      }
      this.buf = this.buf.slice(end);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) {
        this.onEvent({event: this.event || 'message', data: this.data.join('\n'), id: this.lastId});
      }
      this.event = '';
      this.data = [];
      return;
    }
    if (line[0] === ':') return; // comment (keepalive)
    const c = line.indexOf(':');
    const field = c < 0 ? line : line.slice(0, c);
    let value = c < 0 ? '' : line.slice(c + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
  }
}
