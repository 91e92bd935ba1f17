"""DLMS/COSEM with the СПОДЭС profile (ГОСТ Р 58940-2020): sans-I/O codec.

hdlc (IEC 62056-46 link layer), wrapper (IEC 62056-47 TCP wrapper), axdr (A-XDR data), acse (association),
xdlms (GET/SET services), spodes (object map -> pollerd channels), session (one client association built
from the above, still without I/O).
"""
