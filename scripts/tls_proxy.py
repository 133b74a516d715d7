"""Mutual TLS in front of a unix socket, for an engine that serves its API on a socket only (Podman 4).

    python tls_proxy.py PORT SOCKET CERT_DIR     # CERT_DIR holds ca.pem, cert.pem, key.pem

Listens on 127.0.0.1:PORT, requires a client certificate issued by CERT_DIR/ca.pem (as dockerd's
--tlsverify does) and copies bytes both ways between each client and a new connection to SOCKET.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (OSError, RuntimeError):
            writer.close()


async def main(port: int, socket_path: str, certs: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    context.load_verify_locations(certs / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            engine_reader, engine_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, engine_writer), _pipe(engine_reader, client_writer))
        for writer in (client_writer, engine_writer):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
