"""The model SDK: what a model author needs beside the generic ABI header.

- `c_header.render_header`: a declared interface (docs/model-interface.md) as
  ``model_interface.h``, named and typed accessors for every array and scalar it names, so no
  offset is written by hand;
- `digest.interface_digest`: the u32 the header bakes into a binary (``lc_interface_digest``)
  so that the package validator can tell a binary built for another declaration;
- `build`: the one compile of a model's C into the module the sandbox accepts (PyPI
  ``ziglang``), used by ``livecalc package build`` and by ``models/build.py``;
- `template`: ``livecalc package init NAME --template c``, an endowment to start from
  (docs/model-authoring.md).
"""
