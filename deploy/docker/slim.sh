#!/bin/sh
# Trims a virtual environment for an image, in the build stage (deploy/docker/Dockerfile):
# what serving never loads (sizes in benchmarks/RESULTS-image.md).
#   slim.sh VENV
# - pip and setuptools (the image installs nothing at run time);
# - huggingface_hub and hf_xet, which tokenizers needs only for Tokenizer.from_pretrained
#   (the server reads tokenizer.json from the model repository, never from the hub);
# - the test suites that dependencies ship (numpy's, ray's, ...);
# - botocore's API models for every AWS service but S3 (the model repository, payload logs)
#   and STS, SSO and SSO-OIDC (credentials: IRSA's web identity, SSO profiles);
# - debug symbols in extension modules (strip --strip-unneeded; ml_dtypes alone is 24 MB
#   of them), but not in the libraries auditwheel vendors into <package>.libs/: those were
#   rewritten by patchelf, and strip breaks them (numpy's OpenBLAS stops loading).
set -eu
venv=$1
"$venv/bin/python" -m pip uninstall --quiet --yes huggingface_hub hf-xet setuptools pip 2>/dev/null || true
site=$(find "$venv/lib" -maxdepth 2 -name site-packages -type d)
find "$site" -depth -type d -name tests -exec rm -rf {} +
if [ -d "$site/botocore/data" ]; then
    for service in "$site"/botocore/data/*/; do
        case $(basename "$service") in
            s3 | sts | sso | sso-oidc) ;;
            *) rm -rf "$service" ;;
        esac
    done
fi
find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
    -exec strip --strip-unneeded {} +
