"""
Classic pcap capture of every frame that crosses the switch.

The file is flushed after each frame so that C{tcpdump -r} can read it while the
daemon runs. Writes are synchronous; a capture is a debugging aid, not a hot
path, and the cost is only paid with C{--pcap}.
"""

import struct

GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144


class PcapWriter:
    """
    Writes frames to C{path} as a pcap file of link type Ethernet.
    """

    def __init__(self, path, clock, snaplen=SNAPLEN):
        self._clock = clock
        self._snaplen = snaplen
        self._file = open(path, "wb")
        self._file.write(GLOBAL_HEADER.pack(MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self._file.flush()

    def __call__(self, frame):
        """
        Append one frame.
        """
        if self._file is None:
            return
        now = self._clock.seconds()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        data = frame[: self._snaplen]
        self._file.write(RECORD_HEADER.pack(seconds, micros, len(data), len(frame)))
        self._file.write(data)
        self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
