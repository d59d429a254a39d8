"""The API's default JSON parser: DRF's, made safe against deeply nested bodies.

Python's JSON decoder recurses once per level, so a body such as `[[[[...]]]]` 100,000 levels deep
raises RecursionError (a 500 before this parser). Here it is a 400 "too deeply nested", as is any
body nested deeper than MAX_DEPTH levels: no request body of this API needs more.
"""

from rest_framework import exceptions, parsers

from core.json_input import nesting_exceeds

MAX_DEPTH = 32
TOO_DEEP = f"The body is nested too deeply (at most {MAX_DEPTH} levels of objects and arrays)."


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(TOO_DEEP) from None
        if nesting_exceeds(data, MAX_DEPTH):
            raise exceptions.ParseError(TOO_DEEP)
        return data
