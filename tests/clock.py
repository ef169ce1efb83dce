"""A clock the tests move by hand (sessions take ``clock=``): time-dependent behaviour, tested
without waiting."""


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self):
        return self.t
