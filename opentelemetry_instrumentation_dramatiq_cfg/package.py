_instruments = ("dramatiq >= 1.17, < 3",)
