package tokensecret

import (
	"fmt"
	"slices"
	"strings"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// ValidateTemplate checks spec.secretTemplate the way the API server will check the Secret's
// labels and annotations, so that a template the API server would refuse is reported before a
// token is obtained (a token obtained for a Secret that cannot be written is spent in vain).
// Admission rejects most of this already; this catches resources stored before those rules.
func ValidateTemplate(t *authv1alpha1.SecretTemplate) error {
	if t == nil {
		return nil
	}
	base := field.NewPath("spec", "secretTemplate")
	errs := metav1validation.ValidateLabels(t.LabelMap(), base.Child("labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(t.Annotations, base.Child("annotations"))...)
	for _, k := range sortedKeys(t.Annotations) {
		if strings.HasPrefix(k, annotationPrefix) {
			errs = append(errs, field.Invalid(base.Child("annotations").Key(k), k, "keys under "+annotationPrefix+" are reserved for the operator"))
		}
	}
	for _, k := range sortedKeys(t.LabelMap()) {
		if strings.HasPrefix(k, annotationPrefix) {
			errs = append(errs, field.Invalid(base.Child("labels").Key(k), k, "keys under "+annotationPrefix+" are reserved for the operator"))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return fmt.Errorf("the Secret's labels or annotations would be refused: %s", strings.Join(msgs, "; "))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
