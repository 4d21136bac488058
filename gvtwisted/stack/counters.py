"""
One place for every counter of the virtual network: bytes and frames per link and
protocol, drops by reason, errors. The control API serves them as JSON and in the
Prometheus text format.

Counting must be cheap on the hot path, so a counter is a plain dict entry; the
names are dotted strings such as C{"drop.ipv4.badChecksum"}.

Bad input also deserves a log line, but a hostile guest can send millions of bad
frames a second, so L{Counters.complain} logs the first of each reason and then at
most one line per reason every C{logInterval} seconds. L{Counters.failure} does
the same for an exception a service raised, with its traceback.
"""

from collections import defaultdict

from twisted.logger import Logger


class Counters:
    """
    Named integer counters with a rate-limited complaint log.

    @ivar values: the counters, name to integer.
    """

    log = Logger()

    def __init__(self, clock=None, logInterval: float = 10.0):
        self.values = defaultdict(int)
        self._clock = clock
        self.logInterval = logInterval
        self._lastLogged = {}

    def increment(self, name: str, amount: int = 1):
        """
        Add C{amount} to the counter C{name}.
        """
        self.values[name] += amount

    def get(self, name: str) -> int:
        """
        The value of C{name}, 0 if it was never counted.
        """
        return self.values.get(name, 0)

    def complain(self, reason: str, detail: str = ""):
        """
        Count one occurrence of C{reason} (as C{"drop." + reason}) and log it,
        at most once per reason every C{logInterval} seconds.
        """
        name = "drop." + reason
        self.values[name] += 1
        if self._due(reason):
            self.log.warn(
                "dropped: {reason} {detail} (seen {count} times)",
                reason=reason,
                detail=detail,
                count=self.values[name],
            )

    def failure(self, where: str, detail: str = ""):
        """
        Count an exception a service raised (as C{"error." + where}) and log
        it with its traceback, at most once per C{where} every
        C{logInterval} seconds. Call it from the C{except} block: the
        exception being handled is the one logged.
        """
        name = "error." + where
        self.values[name] += 1
        if self._due(name):
            self.log.failure(
                "{where} raised {detail} (seen {count} times)",
                where=where,
                detail=detail,
                count=self.values[name],
            )

    def _due(self, key) -> bool:
        """
        Whether a line for C{key} may be logged now (and if so, note it).
        """
        now = self._clock.seconds() if self._clock is not None else None
        last = self._lastLogged.get(key)
        if last is None or (now is not None and now - last >= self.logInterval):
            self._lastLogged[key] = now if now is not None else 0.0
            return True
        return False

    def snapshot(self) -> dict:
        """
        A copy of all counters, sorted by name, for serving.
        """
        return dict(sorted(self.values.items()))
