"""Sans-I/O protocol codecs: bytes in, frames and values out. Nothing here imports asyncio."""
