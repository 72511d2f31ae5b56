"""A real SMTP server on loopback for the e-mail tests (aiosmtpd).

Usage: smtp_sink.py DIR. Listens on 127.0.0.1, a free port, prints "ready PORT" once it accepts
connections, writes every message it receives to DIR as <n>.eml and then prints
"mail PATH RCPT,..." (the test waits on these lines). Runs until killed or stdin closes.
"""

import asyncio
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = os.path.join(self.out_dir, f"{self.count:06}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(b"X-Rcpt-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        os.rename(name + ".tmp", name)
        print(f"mail {name} {','.join(envelope.rcpt_tos)}", flush=True)
        return "250 OK"


async def main(out_dir):
    loop = asyncio.get_running_loop()
    sink = Sink(out_dir)
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="smtp-sink.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    # Stop when the test process goes away (its end of stdin closes).
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
