"""
The Internet checksum (RFC 1071) computed the fast way in CPython.

Summing 16-bit words in a Python loop costs a microsecond per few words; instead
the whole buffer is read as one big integer and reduced modulo 0xFFFF, which CPython
does in C. Since 2**16 is congruent to 1 modulo 0xFFFF, the big number is congruent
to the sum of its 16-bit words, which is exactly the ones' complement sum (up to
the 0 / 0xFFFF ambiguity, fixed up below).
"""

_ZERO = b"\x00"


def onesSum(data, initial: int = 0) -> int:
    """
    The 16-bit ones' complement sum of C{data} plus C{initial}, in 0..0xFFFF.

    An odd-length buffer is padded with one zero byte, as RFC 1071 says.
    """
    if len(data) & 1:
        total = int.from_bytes(bytes(data) + _ZERO, "big")
    else:
        total = int.from_bytes(data, "big")
    total = (total + initial) % 0xFFFF
    if total == 0 and (initial or any(data)):
        # A non-zero sum congruent to 0 is 0xFFFF in ones' complement.
        return 0xFFFF
    return total


def internetChecksum(data, initial: int = 0) -> int:
    """
    The checksum field value for C{data}: the complement of its ones' sum.
    """
    return 0xFFFF - onesSum(data, initial)


def pseudoHeaderSum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """
    The ones' sum of the IPv4 pseudo header that TCP and UDP checksums cover.
    """
    return (
        int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length
    ) % 0xFFFF


def verifies(data, initial: int = 0) -> bool:
    """
    Whether C{data}, which contains its own checksum field, sums correctly.
    """
    return onesSum(data, initial) == 0xFFFF
