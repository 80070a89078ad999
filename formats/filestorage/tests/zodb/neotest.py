"""Persistent classes used by the generated test databases."""
import persistent


class Item(persistent.Persistent):
    def __init__(self, value):
        self.value = value
