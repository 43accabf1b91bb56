"""The model SDK: what a model author's C needs beside the generic ABI header.

`c_header.render_header` turns a declared interface (docs/model-interface.md) into
``model_interface.h``: named, typed accessors for every array and scalar the declaration names,
so no offset is written by hand.
"""
